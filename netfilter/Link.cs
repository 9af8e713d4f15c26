using SecureVmm.NetFilter.Backends;
using SecureVmm.NetFilter.Capture;

namespace SecureVmm.NetFilter;

/// <summary>
/// The guest side of a link: the virtual NIC's receive path. Returns false when the guest could
/// not take the frame (e.g. its receive ring is full); the frame is then lost, as on hardware.
/// </summary>
public delegate bool GuestPort(ReadOnlySpan<byte> frame);

/// <summary>
/// One VM's network connection and the only path its frames take:
/// guest → <see cref="Filter.Outbound"/> → backend.Send, and backend receive →
/// <see cref="Filter.Inbound"/> → guest port. The guest port, filter and backend are fixed at
/// construction and never change, so a frame received on this link's backend can only ever reach
/// this link's guest, and a frame from this guest can only leave by this link's backend.
/// </summary>
public sealed class Link : IDisposable
{
    private readonly INetworkBackend _backend;
    private readonly GuestPort _guestPort;
    private readonly IFrameCapture? _capture;
    private long _guestRefused;
    private int _started;

    public Link(string network, Filter filter, INetworkBackend backend, GuestPort guestPort, IFrameCapture? capture = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(network);
        ArgumentNullException.ThrowIfNull(filter);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(guestPort);
        Network = network;
        Filter = filter;
        _backend = backend;
        _guestPort = guestPort;
        _capture = capture;
    }

    public string Network { get; }

    public Filter Filter { get; }

    public INetworkBackend Backend => _backend;

    internal GuestPort GuestPort => _guestPort;

    /// <summary>Allowed inbound frames the guest could not take.</summary>
    public long GuestRefused => Interlocked.Read(ref _guestRefused);

    /// <summary>Starts receiving from the backend. Frames before this are not delivered.</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException($"network {Network}: link already started");
        }
        _backend.Start(FromNetwork);
    }

    /// <summary>The NIC's transmit path: filter the guest's frame and send it if allowed.</summary>
    public Verdict FromGuest(ReadOnlySpan<byte> frame)
    {
        var verdict = Filter.Outbound(frame);
        _capture?.Capture(FrameDirection.Outbound, verdict, frame);
        if (verdict.IsAllowed)
        {
            _backend.Send(frame);
        }
        return verdict;
    }

    private void FromNetwork(ReadOnlySpan<byte> frame)
    {
        var verdict = Filter.Inbound(frame);
        _capture?.Capture(FrameDirection.Inbound, verdict, frame);
        if (verdict.IsAllowed && !_guestPort(frame))
        {
            Interlocked.Increment(ref _guestRefused);
        }
    }

    public void Dispose() => _backend.Dispose();
}

/// <summary>
/// All of a machine's links, keyed by network name. It refuses to join a backend, a filter or a
/// guest port to more than one network, so no object can ever carry frames between two networks.
/// </summary>
public sealed class NetworkSwitchboard : IDisposable
{
    private readonly Dictionary<string, Link> _links = new(StringComparer.Ordinal);
    private readonly object _gate = new();

    public IReadOnlyCollection<Link> Links
    {
        get
        {
            lock (_gate)
            {
                return [.. _links.Values];
            }
        }
    }

    public Link this[string network]
    {
        get
        {
            lock (_gate)
            {
                return _links.TryGetValue(network, out var link) ? link : throw new KeyNotFoundException($"no network named '{network}'");
            }
        }
    }

    /// <summary>Builds and registers the link for <paramref name="network"/>; throws if anything is already in use.</summary>
    public Link Connect(string network, Filter filter, INetworkBackend backend, GuestPort guestPort, IFrameCapture? capture = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(network);
        ArgumentNullException.ThrowIfNull(filter);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(guestPort);
        lock (_gate)
        {
            if (_links.ContainsKey(network))
            {
                throw new InvalidOperationException($"network {network}: already connected");
            }
            foreach (var other in _links.Values)
            {
                if (ReferenceEquals(other.Backend, backend))
                {
                    throw new InvalidOperationException($"network {network}: backend '{backend.Description}' already belongs to network {other.Network}");
                }
                if (ReferenceEquals(other.Filter, filter))
                {
                    throw new InvalidOperationException($"network {network}: filter already belongs to network {other.Network}");
                }
                if (other.GuestPort.Equals(guestPort))
                {
                    throw new InvalidOperationException($"network {network}: guest port already belongs to network {other.Network}");
                }
            }
            var link = new Link(network, filter, backend, guestPort, capture);
            _links.Add(network, link);
            return link;
        }
    }

    public void StartAll()
    {
        foreach (var link in Links)
        {
            link.Start();
        }
    }

    /// <summary>Flushes each filter's drop report if its interval has passed (call from a timer).</summary>
    public void FlushDropsIfDue()
    {
        foreach (var link in Links)
        {
            link.Filter.FlushIfDue();
        }
    }

    public void Dispose()
    {
        foreach (var link in Links)
        {
            link.Dispose();
        }
    }
}
