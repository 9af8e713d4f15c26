namespace SecureVmm.NetFilter;

/// <summary>
/// A token bucket in integer fixed point: one token is <c>ticksPerSecond</c> units, so refilling
/// for <c>elapsed</c> clock ticks at <c>rate</c> tokens per second adds exactly
/// <c>elapsed * rate</c> units with no division and no rounding drift. A refill longer than what
/// fills the bucket just fills it, which keeps every product inside 64 bits (rates are bounded by
/// <see cref="FilterConfig.Validate"/>; capacities saturate). Not thread-safe: one bucket per direction, used by that
/// direction's single caller.
/// </summary>
internal sealed class TokenBucket
{
    private readonly long _ticksPerSecond;
    private readonly long _framesPerSecond;
    private readonly long _bytesPerSecond;
    private readonly long _frameCapacity;
    private readonly long _byteCapacity;
    private long _frameUnits;
    private long _byteUnits;
    private long _lastTicks;

    public TokenBucket(RateLimit limit, long ticksPerSecond, long nowTicks)
    {
        _ticksPerSecond = ticksPerSecond;
        _framesPerSecond = limit.FramesPerSecond;
        _bytesPerSecond = limit.BytesPerSecond;
        _frameCapacity = SaturatingMultiply(limit.BurstFrames > 0 ? limit.BurstFrames : limit.FramesPerSecond, ticksPerSecond);
        _byteCapacity = SaturatingMultiply(limit.BurstBytes > 0 ? limit.BurstBytes : limit.BytesPerSecond, ticksPerSecond);
        _frameUnits = _frameCapacity;
        _byteUnits = _byteCapacity;
        _lastTicks = nowTicks;
    }

    /// <summary>Takes one frame of <paramref name="bytes"/> bytes if both buckets hold enough; false otherwise (nothing taken).</summary>
    public bool TryTake(int bytes, long nowTicks)
    {
        long elapsed = nowTicks - _lastTicks;
        if (elapsed > 0)
        {
            _lastTicks = nowTicks;
            _frameUnits = Refill(_frameUnits, _frameCapacity, _framesPerSecond, elapsed);
            _byteUnits = Refill(_byteUnits, _byteCapacity, _bytesPerSecond, elapsed);
        }
        long byteCost = _bytesPerSecond > 0 ? (long)bytes * _ticksPerSecond : 0;
        long frameCost = _framesPerSecond > 0 ? _ticksPerSecond : 0;
        if (_frameUnits < frameCost || _byteUnits < byteCost)
        {
            return false;
        }
        _frameUnits -= frameCost;
        _byteUnits -= byteCost;
        return true;
    }

    private static long Refill(long units, long capacity, long rate, long elapsed)
    {
        if (rate == 0 || units >= capacity)
        {
            return units;
        }
        // Ticks until full, rounded up; from then on the bucket is simply full. Below that,
        // elapsed * rate < capacity - units, so the product cannot overflow.
        long room = capacity - units;
        long ticksToFull = (room / rate) + (room % rate == 0 ? 0 : 1);
        return elapsed >= ticksToFull ? capacity : units + (elapsed * rate);
    }

    private static long SaturatingMultiply(long a, long b) =>
        a != 0 && b > long.MaxValue / a ? long.MaxValue : a * b;
}
