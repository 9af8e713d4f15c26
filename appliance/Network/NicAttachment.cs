using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.NetFilter.Capture;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Devices;

namespace SecureVmm.Appliance.Network;

/// <summary>Where a NIC's drop reports go: one audit log, and the indices this VM and network have in its header.</summary>
/// <param name="VirtualTimeNs">The VM's virtual time for the records (DESIGN.md principle 5: time belongs to the VMM).</param>
public sealed record NicAuditTarget(AuditWriter Writer, ushort VmId, ushort NetworkId, Func<long> VirtualTimeNs);

/// <summary>
/// Joins one VM's virtio-net device to one network: guest transmit (VM thread) → the link's filter
/// (outbound) → backend; backend receive (its own thread) → filter (inbound) → <see cref="VirtioNet.Deliver"/>.
/// The filter is built here with this attachment as its drop sink, so every drop it reports becomes
/// <see cref="AuditKind.FramesDropped"/> records — one per (direction, reason) per report, carrying the
/// exact count and the first sampled frame's head. The filter's own sampling and flush interval bound
/// how many records a flood can cause (at most one report per interval).
/// The transmit path allocates nothing: the filter, capture and backend take spans.
/// </summary>
public sealed class NicAttachment : IFramePort, IDropSink, IDisposable
{
    /// <summary>Set in the audit reason code of inbound drops; the low byte is the <see cref="DropReason"/>.</summary>
    public const uint InboundReasonFlag = 0x100;

    private readonly VirtioNet _nic;
    private readonly NicAuditTarget? _audit;
    private readonly Timer _flushTimer;
    private readonly TimeSpan _flushInterval;
    private long _auditRecords;
    private long _auditFailures;
    private int _started;
    private int _disposed;

    /// <param name="nic">The VM's NIC; its <see cref="VirtioNet.Network"/> must not be taken yet.</param>
    /// <param name="network">The network's name (unique in <paramref name="switchboard"/> when one is given).</param>
    /// <param name="config">The VM's filter policy on this network; invalid configs throw <see cref="FilterConfigException"/>.</param>
    /// <param name="backend">Where allowed frames go; owned (disposed) by this attachment.</param>
    /// <param name="audit">Optional audit log for drop reports.</param>
    /// <param name="switchboard">Optional: registers the link there, which refuses reuse of the backend on another network.</param>
    public NicAttachment(
        VirtioNet nic,
        string network,
        FilterConfig config,
        INetworkBackend backend,
        NicAuditTarget? audit = null,
        IFrameCapture? capture = null,
        NetworkSwitchboard? switchboard = null,
        TimeProvider? time = null,
        TimeSpan? flushInterval = null)
    {
        ArgumentNullException.ThrowIfNull(nic);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(backend);
        if (nic.Network is not null)
        {
            throw new InvalidOperationException($"network {network}: the NIC is already attached to a network");
        }
        if (MacAddress.Read(nic.Mac) != config.Mac)
        {
            // The filter pins the source MAC; a NIC announcing another one could never send.
            throw new ArgumentException($"network {network}: filter MAC {config.Mac} differs from the NIC's MAC", nameof(config));
        }
        _nic = nic;
        _audit = audit;
        _flushInterval = flushInterval ?? TimeSpan.FromSeconds(1);
        Filter = new Filter(config, time, this, null, _flushInterval);
        GuestPort port = nic.Deliver;
        Link = switchboard is null
            ? new Link(network, Filter, backend, port, capture)
            : switchboard.Connect(network, Filter, backend, port, capture);
        _flushTimer = new Timer(static state => ((NicAttachment)state!).Filter.FlushIfDue(), this, Timeout.Infinite, Timeout.Infinite);
        nic.Network = this;
    }

    public Filter Filter { get; }

    public Link Link { get; }

    /// <summary>FramesDropped records appended to the audit log, and appends the log refused (closed or failed).</summary>
    public long AuditRecords => Interlocked.Read(ref _auditRecords);

    public long AuditFailures => Interlocked.Read(ref _auditFailures);

    /// <summary>Starts receiving from the backend and the periodic drop-report flush.</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException($"network {Link.Network}: attachment already started");
        }
        Link.Start();
        _flushTimer.Change(_flushInterval, _flushInterval);
    }

    /// <summary>The NIC's transmit path (VM thread): the filter decides, the backend sends.</summary>
    public void Transmit(ReadOnlySpan<byte> frame)
    {
        if (!Link.FromGuest(frame).IsAllowed)
        {
            // Cheap unless the interval has passed; the timer catches the quiet case.
            Filter.FlushIfDue();
        }
    }

    /// <summary>The audit code for a drop: the reason, with <see cref="InboundReasonFlag"/> for inbound drops.</summary>
    public static uint AuditReasonCode(FrameDirection direction, DropReason reason) =>
        (uint)reason | (direction == FrameDirection.Inbound ? InboundReasonFlag : 0);

    /// <summary>Inverse of <see cref="AuditReasonCode"/>.</summary>
    public static (FrameDirection Direction, DropReason Reason) DecodeAuditReason(uint code) =>
        ((code & InboundReasonFlag) != 0 ? FrameDirection.Inbound : FrameDirection.Outbound, (DropReason)(code & 0xFF));

    void IDropSink.OnDrops(DropReport report)
    {
        if (_audit is null)
        {
            return;
        }
        foreach (var count in report.Counts)
        {
            ReadOnlySpan<byte> sample = default;
            foreach (var s in report.Samples)
            {
                if (s.Direction == count.Direction && s.Reason == count.Reason)
                {
                    sample = s.Head.Span;
                    break;
                }
            }
            var record = AuditRecord.FramesDropped(_audit.VmId, (ulong)Math.Max(0, _audit.VirtualTimeNs()), _audit.NetworkId,
                AuditReasonCode(count.Direction, count.Reason), (ulong)count.Frames, sample);
            if (_audit.Writer.Append(in record) == AuditAppendStatus.Accepted)
            {
                Interlocked.Increment(ref _auditRecords);
            }
            else
            {
                Interlocked.Increment(ref _auditFailures);
            }
        }
    }

    /// <summary>Detaches from the NIC, reports what is still pending and closes the backend.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _flushTimer.Dispose();
        if (ReferenceEquals(_nic.Network, this))
        {
            _nic.Network = null;
        }
        Link.Dispose();
        Filter.Flush();
    }
}
