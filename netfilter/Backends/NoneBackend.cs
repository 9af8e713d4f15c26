namespace SecureVmm.NetFilter.Backends;

/// <summary>No network: everything sent is discarded, nothing is ever received.</summary>
public sealed class NoneBackend : INetworkBackend
{
    private long _discarded;

    public string Description => "none";

    /// <summary>Frames discarded so far (they are not errors: discarding is this backend's job).</summary>
    public long Discarded => Interlocked.Read(ref _discarded);

    public long SendErrors => 0;

    public void Send(ReadOnlySpan<byte> frame) => Interlocked.Increment(ref _discarded);

    public void Start(FrameHandler onReceive) => ArgumentNullException.ThrowIfNull(onReceive);

    public void Dispose()
    {
    }
}
