namespace SecureVmm.NetFilter;

/// <summary>Receives batched drop reports (the audit log's side of the filter).</summary>
public interface IDropSink
{
    void OnDrops(DropReport report);
}

/// <summary>Exact number of frames dropped for one reason in one direction during a report's window.</summary>
public readonly record struct DropCount(FrameDirection Direction, DropReason Reason, long Frames);

/// <summary>One sampled dropped frame: when, why, and its first bytes (headers, not payload).</summary>
public sealed record DropSample(
    long Timestamp,
    FrameDirection Direction,
    DropReason Reason,
    int RuleIndex,
    int FrameLength,
    ReadOnlyMemory<byte> Head);

/// <summary>
/// What was dropped between two flushes: exact counts per (direction, reason), a bounded number
/// of samples, and how many drops were not sampled. Timestamps are in the filter clock's ticks
/// (<see cref="TicksPerSecond"/> per second).
/// </summary>
public sealed record DropReport(
    long WindowStart,
    long WindowEnd,
    long TicksPerSecond,
    IReadOnlyList<DropCount> Counts,
    IReadOnlyList<DropSample> Samples,
    long UnsampledDrops)
{
    public long TotalDrops
    {
        get
        {
            long total = 0;
            foreach (var c in Counts)
            {
                total += c.Frames;
            }
            return total;
        }
    }
}

/// <summary>How drop samples are rate-limited.</summary>
public sealed record DropSamplingOptions
{
    /// <summary>At most this many samples per (direction, reason) in any one-second window.</summary>
    public int SamplesPerReasonPerSecond { get; init; } = 4;

    /// <summary>At most this many samples held between flushes, whatever the reasons.</summary>
    public int MaxSamplesPerReport { get; init; } = 64;

    /// <summary>Bytes kept from the start of each sampled frame (enough for Ethernet + IPv6 + TCP headers).</summary>
    public int SampleBytes { get; init; } = 96;
}

/// <summary>
/// Collects drops between flushes so that a flood cannot flood the audit log: every drop is
/// counted exactly; only the first few per reason per second are sampled, into buffers allocated
/// once. Callers from the two directions may race with each other and with a flush, so state is
/// guarded by one lock; the allow path never touches it.
/// </summary>
internal sealed class DropRecorder
{
    private const int Directions = 2;
    private static readonly int Reasons = Enum.GetValues<DropReason>().Length;

    private readonly object _gate = new();
    private readonly DropSamplingOptions _options;
    private readonly long _ticksPerSecond;
    private readonly long[] _pendingCounts = new long[Directions * Reasons];
    private readonly long[] _windowStart = new long[Directions * Reasons];
    private readonly int[] _sampledInWindow = new int[Directions * Reasons];
    private readonly byte[][] _sampleHeads;
    private readonly (long Timestamp, FrameDirection Direction, DropReason Reason, int Rule, int Length, int HeadLength)[] _samples;
    private int _sampleCount;
    private long _unsampled;
    private long _windowOpen;
    private bool _any;

    public DropRecorder(DropSamplingOptions options, long ticksPerSecond, long nowTicks)
    {
        _options = options;
        _ticksPerSecond = ticksPerSecond;
        _sampleHeads = new byte[options.MaxSamplesPerReport][];
        for (int i = 0; i < _sampleHeads.Length; i++)
        {
            _sampleHeads[i] = new byte[options.SampleBytes];
        }
        _samples = new (long, FrameDirection, DropReason, int, int, int)[options.MaxSamplesPerReport];
        Array.Fill(_windowStart, long.MinValue);
        _windowOpen = nowTicks;
    }

    public void Record(FrameDirection direction, Verdict verdict, ReadOnlySpan<byte> frame, long nowTicks)
    {
        int slot = ((int)direction * Reasons) + (int)verdict.Reason;
        lock (_gate)
        {
            _any = true;
            _pendingCounts[slot]++;
            if (nowTicks - _windowStart[slot] >= _ticksPerSecond || _windowStart[slot] == long.MinValue)
            {
                _windowStart[slot] = nowTicks;
                _sampledInWindow[slot] = 0;
            }
            if (_sampledInWindow[slot] >= _options.SamplesPerReasonPerSecond || _sampleCount >= _samples.Length)
            {
                _unsampled++;
                return;
            }
            _sampledInWindow[slot]++;
            int headLength = Math.Min(frame.Length, _options.SampleBytes);
            frame[..headLength].CopyTo(_sampleHeads[_sampleCount]);
            _samples[_sampleCount] = (nowTicks, direction, verdict.Reason, verdict.RuleIndex, frame.Length, headLength);
            _sampleCount++;
        }
    }

    /// <summary>Takes what has accumulated since the last call as a report; null when nothing was dropped.</summary>
    public DropReport? Take(long nowTicks)
    {
        lock (_gate)
        {
            if (!_any)
            {
                _windowOpen = nowTicks;
                return null;
            }
            var counts = new List<DropCount>();
            for (int i = 0; i < _pendingCounts.Length; i++)
            {
                if (_pendingCounts[i] != 0)
                {
                    counts.Add(new DropCount((FrameDirection)(i / Reasons), (DropReason)(i % Reasons), _pendingCounts[i]));
                    _pendingCounts[i] = 0;
                }
            }
            var samples = new DropSample[_sampleCount];
            for (int i = 0; i < _sampleCount; i++)
            {
                var s = _samples[i];
                samples[i] = new DropSample(s.Timestamp, s.Direction, s.Reason, s.Rule, s.Length, _sampleHeads[i].AsSpan(0, s.HeadLength).ToArray());
            }
            var report = new DropReport(_windowOpen, nowTicks, _ticksPerSecond, counts, samples, _unsampled);
            _sampleCount = 0;
            _unsampled = 0;
            _any = false;
            _windowOpen = nowTicks;
            return report;
        }
    }
}
