namespace SecureVmm.NetFilter.Backends;

/// <summary>Called with each frame a backend receives; the span is valid only during the call.</summary>
public delegate void FrameHandler(ReadOnlySpan<byte> frame);

/// <summary>
/// Where a network's frames go to and come from on the host side. A backend belongs to exactly
/// one <see cref="Link"/>; it knows nothing of filters or guests.
/// </summary>
public interface INetworkBackend : IDisposable
{
    /// <summary>What this backend is connected to, for status and logs (e.g. "tap vm0 in netns red").</summary>
    string Description { get; }

    /// <summary>Transmits one Ethernet frame (without FCS). Failures are counted, not thrown: a
    /// network that is down loses frames, as a cable would.</summary>
    void Send(ReadOnlySpan<byte> frame);

    /// <summary>Starts delivering received frames to <paramref name="onReceive"/> on the backend's own
    /// thread. Called at most once.</summary>
    void Start(FrameHandler onReceive);

    /// <summary>Frames that could not be transmitted.</summary>
    long SendErrors { get; }
}

/// <summary>A backend could not be set up; the message says what and why.</summary>
public sealed class NetworkBackendException : Exception
{
    public NetworkBackendException()
    {
    }

    public NetworkBackendException(string message)
        : base(message)
    {
    }

    public NetworkBackendException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
