using SecureVmm.NetFilter.Parsing;

namespace SecureVmm.NetFilter;

/// <summary>
/// The network filter for one VM's interface: default deny, anti-spoofing in the manner of
/// libvirt's clean-traffic filter (no-mac-spoofing, no-arp-spoofing, no-ip-spoofing,
/// allow-dhcp), then the policy's allow rules (first match wins), then rate limits.
/// <para>
/// Threading: <see cref="Outbound"/> and <see cref="Inbound"/> may run concurrently with each
/// other (the vCPU and the backend's receive thread), but each must be called by one thread at
/// a time. Counters and <see cref="Flush"/> may be read from any thread. Deciding never
/// allocates; a drop takes a short lock to be counted for the audit report.
/// </para>
/// </summary>
public sealed class Filter
{
    private static readonly int ReasonCount = Enum.GetValues<DropReason>().Length;

    private readonly CompiledRule[] _rules;
    private readonly TokenBucket?[] _ruleBuckets;
    private readonly bool _antiSpoofing;
    private readonly string[] _ruleNames;
    private readonly MacAddress _mac;
    private readonly uint[] _ipv4;
    private readonly UInt128[] _ipv6;
    private readonly bool _allowDhcp;
    private readonly int _maxFrameBytes;
    private readonly TimeProvider _time;
    private readonly TokenBucket? _outboundBucket;
    private readonly TokenBucket? _inboundBucket;
    private readonly DropRecorder _drops;
    private readonly IDropSink? _dropSink;
    private readonly long _flushIntervalTicks;
    private long _lastFlush;

    // Counters, updated with Interlocked so `status` can read them from another thread.
    private readonly long[] _ruleFrames;
    private readonly long[] _ruleBytes;
    private long _dhcpFrames;
    private readonly long[] _allowedFrames = new long[2];
    private readonly long[] _allowedBytes = new long[2];
    private readonly long[] _dropCounts = new long[2 * ReasonCount];

    /// <param name="config">Validated here; problems throw <see cref="FilterConfigException"/> naming each field.</param>
    /// <param name="time">Clock for rate limits and drop sampling; tests pass a manual one.</param>
    /// <param name="dropSink">Receives drop reports from <see cref="Flush"/> (the audit log).</param>
    /// <param name="sampling">How drops are sampled; defaults to <see cref="DropSamplingOptions"/>' defaults.</param>
    /// <param name="flushInterval">How often <see cref="FlushIfDue"/> flushes; default one second.</param>
    public Filter(FilterConfig config, TimeProvider? time = null, IDropSink? dropSink = null, DropSamplingOptions? sampling = null, TimeSpan? flushInterval = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        var problems = config.Validate();
        sampling ??= new DropSamplingOptions();
        if (sampling.SamplesPerReasonPerSecond < 0 || sampling.MaxSamplesPerReport < 0 || sampling.SampleBytes < 0)
        {
            problems = [.. problems, "sampling: counts must not be negative"];
        }
        if (problems.Count > 0)
        {
            throw new FilterConfigException(problems);
        }
        // Keep a private copy of the lists, so what `status` shows is what the filter enforces.
        Config = config with { Addresses = [.. config.Addresses], Rules = [.. config.Rules] };
        _mac = config.Mac;
        _allowDhcp = config.AllowDhcp;
        _maxFrameBytes = config.MaxFrameBytes;
        _time = time ?? TimeProvider.System;
        _dropSink = dropSink;

        var v4 = new List<uint>();
        var v6 = new List<UInt128>();
        foreach (var address in config.Addresses)
        {
            var (family, value) = IpAddressBits.FromIpAddress(address);
            if (family == IpFamily.V4)
            {
                v4.Add((uint)value);
            }
            else
            {
                v6.Add(value);
            }
        }
        if (config.AllowIpv6LinkLocalFromMac)
        {
            v6.Add(IpAddressBits.Ipv6LinkLocalFromMac(config.Mac));
        }
        _ipv4 = [.. v4];
        _ipv6 = [.. v6];

        _rules = new CompiledRule[config.Rules.Count];
        _ruleNames = new string[config.Rules.Count];
        for (int i = 0; i < _rules.Length; i++)
        {
            _rules[i] = new CompiledRule(config.Rules[i]);
            _ruleNames[i] = config.Rules[i].Name ?? $"rule {i}";
        }
        _ruleFrames = new long[_rules.Length];
        _antiSpoofing = config.AntiSpoofing;
        _ruleBytes = new long[_rules.Length];

        long now = _time.GetTimestamp();
        long frequency = _time.TimestampFrequency;
        _ruleBuckets = new TokenBucket?[_rules.Length];
        for (int i = 0; i < _rules.Length; i++)
        {
            if (config.Rules[i].Rate is { } ruleRate)
            {
                _ruleBuckets[i] = new TokenBucket(ruleRate, frequency, now);
            }
        }
        if (config.OutboundRate is { } outRate)
        {
            _outboundBucket = new TokenBucket(outRate, frequency, now);
        }
        if (config.InboundRate is { } inRate)
        {
            _inboundBucket = new TokenBucket(inRate, frequency, now);
        }
        _drops = new DropRecorder(sampling, frequency, now);
        var interval = flushInterval ?? TimeSpan.FromSeconds(1);
        _flushIntervalTicks = Math.Max(1, (long)(interval.TotalSeconds * frequency));
        _lastFlush = now;
    }

    public FilterConfig Config { get; }

    /// <summary>Decides a frame the guest sends towards the network.</summary>
    public Verdict Outbound(ReadOnlySpan<byte> frame) => Account(FrameDirection.Outbound, DecideOutbound(frame), frame);

    /// <summary>Decides a frame the network sends towards the guest.</summary>
    public Verdict Inbound(ReadOnlySpan<byte> frame) => Account(FrameDirection.Inbound, DecideInbound(frame), frame);

    private Verdict DecideOutbound(ReadOnlySpan<byte> frame)
    {
        if (frame.Length > _maxFrameBytes)
        {
            return Verdict.Drop(DropReason.FrameTooLarge);
        }
        var parsed = FrameParser.Parse(frame, out var f);
        if (parsed != DropReason.None)
        {
            return Verdict.Drop(parsed);
        }
        bool dhcp = _allowDhcp && f.Network == NetworkLayer.Ipv4 && IsDhcpClientToServer(in f);
        if (!_antiSpoofing)
        {
            return dhcp ? RateLimit(_outboundBucket, frame.Length, Verdict.DhcpRule) : MatchRules(in f, TrafficDirection.Outbound, _outboundBucket);
        }
        // no-mac-spoofing: only the VM's own MAC may appear as source.
        if (f.Source != _mac)
        {
            return Verdict.Drop(DropReason.SpoofedSourceMac);
        }
        switch (f.Network)
        {
            case NetworkLayer.Arp:
                // no-arp-spoofing: sender hardware and protocol address must be the VM's; an ARP
                // probe (RFC 5227 section 2.1.1) has sender IP 0.0.0.0 and is a request.
                if (f.ArpSenderMac != _mac || !(IsOwnIpv4(f.ArpSenderIp) || (f.ArpSenderIp == 0 && f.ArpOperation == 1)))
                {
                    return Verdict.Drop(DropReason.SpoofedArp);
                }
                break;
            case NetworkLayer.Ipv4:
                // no-ip-spoofing; 0.0.0.0 only for a DHCP client that has no address yet (RFC 2131 4.1).
                if (!IsOwnIpv4((uint)f.SourceIp) && !(dhcp && f.SourceIp == 0))
                {
                    return Verdict.Drop(DropReason.SpoofedSourceIp);
                }
                break;
            case NetworkLayer.Ipv6:
                var ndp = CheckOutboundIpv6(in f);
                if (ndp != DropReason.None)
                {
                    return Verdict.Drop(ndp);
                }
                break;
        }
        if (dhcp)
        {
            return RateLimit(_outboundBucket, frame.Length, Verdict.DhcpRule);
        }
        return MatchRules(in f, TrafficDirection.Outbound, _outboundBucket);
    }

    private Verdict DecideInbound(ReadOnlySpan<byte> frame)
    {
        if (frame.Length > _maxFrameBytes)
        {
            return Verdict.Drop(DropReason.FrameTooLarge);
        }
        var parsed = FrameParser.Parse(frame, out var f);
        if (parsed != DropReason.None)
        {
            return Verdict.Drop(parsed);
        }
        // A frame from the network claiming the VM's own MAC is a spoof (or a loop).
        if (f.Source == _mac)
        {
            return Verdict.Drop(DropReason.SpoofedSourceMac);
        }
        bool unicast = !f.Destination.IsMulticast;
        if (unicast && f.Destination != _mac)
        {
            return Verdict.Drop(DropReason.NotForThisVm);
        }
        bool dhcp = false;
        switch (f.Network)
        {
            case NetworkLayer.Arp:
                // Only ARP about the VM's own addresses; a reply must be addressed to its MAC.
                if (!IsOwnIpv4(f.ArpTargetIp) || (f.ArpOperation == 2 && f.ArpTargetMac != _mac))
                {
                    return Verdict.Drop(DropReason.ArpNotForThisVm);
                }
                break;
            case NetworkLayer.Ipv4:
                dhcp = _allowDhcp && IsDhcpServerToClient(in f);
                // A DHCP offer may be unicast to the address being offered (RFC 2131 section 4.1).
                if (unicast && !IsOwnIpv4((uint)f.DestinationIp) && !dhcp)
                {
                    return Verdict.Drop(DropReason.NotForThisVm);
                }
                break;
            case NetworkLayer.Ipv6:
                if (unicast && !IsOwnIpv6(f.DestinationIp))
                {
                    return Verdict.Drop(DropReason.NotForThisVm);
                }
                break;
        }
        if (dhcp)
        {
            return RateLimit(_inboundBucket, frame.Length, Verdict.DhcpRule);
        }
        return MatchRules(in f, TrafficDirection.Inbound, _inboundBucket);
    }

    /// <summary>
    /// no-ip-spoofing for IPv6 plus Neighbour Discovery anti-spoofing (RFC 4861): link-layer
    /// options must carry the VM's MAC and an advertisement may only claim the VM's addresses.
    /// The unspecified source :: is allowed only where RFC 4862 section 5.4.2 (DAD), RFC 4861
    /// section 6.3.7 (router solicitation) and RFC 3810 section 5.2.13 (MLDv2 report) allow it.
    /// </summary>
    private DropReason CheckOutboundIpv6(in FrameInfo f)
    {
        bool icmp6 = f.HasIcmp && f.IpProtocol == IpProtocols.Icmpv6;
        if (!IsOwnIpv6(f.SourceIp))
        {
            bool unspecifiedAllowed = f.SourceIp == UInt128.Zero && icmp6
                && f.IcmpType is Icmpv6Types.RouterSolicitation or Icmpv6Types.NeighborSolicitation or Icmpv6Types.Mldv2Report;
            if (!unspecifiedAllowed)
            {
                return DropReason.SpoofedSourceIp;
            }
            // RFC 4861 section 7.1.1: a solicitation from :: must not carry a source link-layer option.
            if (f.HasNdpLinkLayerOption)
            {
                return DropReason.SpoofedNdp;
            }
        }
        if (icmp6)
        {
            if (f.HasNdpLinkLayerOption && f.NdpLinkLayerAddress != _mac)
            {
                return DropReason.SpoofedNdp;
            }
            if (f.IcmpType == Icmpv6Types.NeighborAdvertisement && !IsOwnIpv6(f.NdpTarget))
            {
                return DropReason.SpoofedNdp;
            }
        }
        return DropReason.None;
    }

    private Verdict MatchRules(in FrameInfo f, TrafficDirection direction, TokenBucket? bucket)
    {
        var destinationKind = f.Destination == MacAddress.Broadcast ? LinkDestinations.Broadcast
            : f.Destination.IsMulticast ? LinkDestinations.Multicast
            : LinkDestinations.Unicast;
        var rules = _rules;
        for (int i = 0; i < rules.Length; i++)
        {
            if (rules[i].Matches(in f, direction, destinationKind))
            {
                if (rules[i].Deny)
                {
                    return Verdict.Drop(DropReason.DeniedByRule, i);
                }
                if (_ruleBuckets[i] is { } ruleBucket && !ruleBucket.TryTake(f.Length, _time.GetTimestamp()))
                {
                    return Verdict.Drop(DropReason.RateLimited, i);
                }
                return RateLimit(bucket, f.Length, i);
            }
        }
        return Verdict.Drop(f.VlanTagged ? DropReason.VlanNotAllowed : DropReason.NoMatchingRule);
    }

    private Verdict RateLimit(TokenBucket? bucket, int length, int ruleIndex)
    {
        if (bucket is not null && !bucket.TryTake(length, _time.GetTimestamp()))
        {
            return Verdict.Drop(DropReason.RateLimited, ruleIndex);
        }
        return Verdict.Allow(ruleIndex);
    }

    private Verdict Account(FrameDirection direction, Verdict verdict, ReadOnlySpan<byte> frame)
    {
        if (verdict.IsAllowed)
        {
            Interlocked.Increment(ref _allowedFrames[(int)direction]);
            Interlocked.Add(ref _allowedBytes[(int)direction], frame.Length);
            if (verdict.RuleIndex >= 0)
            {
                Interlocked.Increment(ref _ruleFrames[verdict.RuleIndex]);
                Interlocked.Add(ref _ruleBytes[verdict.RuleIndex], frame.Length);
            }
            else
            {
                Interlocked.Increment(ref _dhcpFrames);
            }
        }
        else
        {
            Interlocked.Increment(ref _dropCounts[((int)direction * ReasonCount) + (int)verdict.Reason]);
            _drops.Record(direction, verdict, frame, _time.GetTimestamp());
        }
        return verdict;
    }

    private static bool IsDhcpClientToServer(in FrameInfo f) =>
        f.IpProtocol == IpProtocols.Udp && f.HasPorts && !f.IsFragment && !f.VlanTagged && f.SourcePort == 68 && f.DestinationPort == 67;

    private static bool IsDhcpServerToClient(in FrameInfo f) =>
        f.IpProtocol == IpProtocols.Udp && f.HasPorts && !f.IsFragment && !f.VlanTagged && f.SourcePort == 67 && f.DestinationPort == 68;

    private bool IsOwnIpv4(uint address) => Array.IndexOf(_ipv4, address) >= 0;

    private bool IsOwnIpv6(UInt128 address)
    {
        foreach (var own in _ipv6)
        {
            if (own == address)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>A snapshot of every counter (for `status`).</summary>
    public FilterCounters ReadCounters()
    {
        var rules = new RuleCounter[_rules.Length];
        for (int i = 0; i < rules.Length; i++)
        {
            rules[i] = new RuleCounter(i, _ruleNames[i], Interlocked.Read(ref _ruleFrames[i]), Interlocked.Read(ref _ruleBytes[i]));
        }
        var drops = new List<DropCount>();
        for (int i = 0; i < _dropCounts.Length; i++)
        {
            long n = Interlocked.Read(ref _dropCounts[i]);
            if (n != 0)
            {
                drops.Add(new DropCount((FrameDirection)(i / ReasonCount), (DropReason)(i % ReasonCount), n));
            }
        }
        return new FilterCounters(
            rules,
            Interlocked.Read(ref _dhcpFrames),
            Interlocked.Read(ref _allowedFrames[0]),
            Interlocked.Read(ref _allowedBytes[0]),
            Interlocked.Read(ref _allowedFrames[1]),
            Interlocked.Read(ref _allowedBytes[1]),
            drops);
    }

    /// <summary>Total drops so far for one direction and reason.</summary>
    public long DropsFor(FrameDirection direction, DropReason reason) =>
        Interlocked.Read(ref _dropCounts[((int)direction * ReasonCount) + (int)reason]);

    /// <summary>
    /// Hands what was dropped since the last flush to the drop sink (if any) and returns it; null
    /// when nothing was dropped. The appliance calls this from a timer, or <see cref="FlushIfDue"/>.
    /// </summary>
    public DropReport? Flush()
    {
        long now = _time.GetTimestamp();
        Volatile.Write(ref _lastFlush, now);
        var report = _drops.Take(now);
        if (report is not null)
        {
            _dropSink?.OnDrops(report);
        }
        return report;
    }

    /// <summary>Flushes when the flush interval has passed since the last flush; cheap otherwise.</summary>
    public DropReport? FlushIfDue() =>
        _time.GetTimestamp() - Volatile.Read(ref _lastFlush) >= _flushIntervalTicks ? Flush() : null;

    /// <summary>A rule in the form the hot path reads: flags and integers, no nullables, no references.</summary>
    private readonly struct CompiledRule
    {
        private readonly TrafficDirection _direction;
        private readonly LinkDestinations _destinations;
        private readonly bool _hasEtherType;
        private readonly ushort _etherType;
        private readonly bool _hasVlans;
        private readonly int _vlanLow;
        private readonly int _vlanHigh;
        private readonly bool _needsIp;
        private readonly IpFamily _family;
        private readonly bool _hasProtocol;
        private readonly byte _protocol;
        private readonly bool _hasSource;
        private readonly IpPrefix _source;
        private readonly bool _hasDestination;
        private readonly IpPrefix _destination;
        private readonly bool _hasSourcePorts;
        private readonly NumberRange _sourcePorts;
        private readonly bool _hasDestinationPorts;
        private readonly NumberRange _destinationPorts;
        private readonly bool _hasIcmpType;
        private readonly byte _icmpType;
        private readonly bool _hasIcmpCode;
        private readonly byte _icmpCode;

        public CompiledRule(AllowRule rule)
        {
            Deny = rule.Action == RuleAction.Deny;
            _direction = rule.Direction;
            _destinations = rule.LinkDestinations;
            _hasEtherType = rule.EtherType.HasValue;
            _etherType = rule.EtherType.GetValueOrDefault();
            _hasVlans = rule.Vlans.HasValue;
            _vlanLow = rule.Vlans?.Low ?? 0;
            _vlanHigh = rule.Vlans?.High ?? 0;
            _hasProtocol = rule.IpProtocol.HasValue;
            _protocol = rule.IpProtocol.GetValueOrDefault();
            _hasSource = rule.Source.HasValue;
            _source = rule.Source.GetValueOrDefault();
            _hasDestination = rule.Destination.HasValue;
            _destination = rule.Destination.GetValueOrDefault();
            _hasSourcePorts = rule.SourcePorts.HasValue;
            _sourcePorts = rule.SourcePorts.GetValueOrDefault();
            _hasDestinationPorts = rule.DestinationPorts.HasValue;
            _destinationPorts = rule.DestinationPorts.GetValueOrDefault();
            _hasIcmpType = rule.IcmpType.HasValue;
            _icmpType = rule.IcmpType.GetValueOrDefault();
            _hasIcmpCode = rule.IcmpCode.HasValue;
            _icmpCode = rule.IcmpCode.GetValueOrDefault();
            _needsIp = _hasProtocol || _hasSource || _hasDestination;
            _family = _hasSource ? _source.Family
                : _hasDestination ? _destination.Family
                : rule.EtherType == EtherTypes.Ipv4 ? IpFamily.V4
                : rule.EtherType == EtherTypes.Ipv6 ? IpFamily.V6
                : IpFamily.None;
        }

        public bool Deny { get; }

        public bool Matches(in FrameInfo f, TrafficDirection direction, LinkDestinations destinationKind)
        {
            if ((_direction & direction) == 0 || (_destinations & destinationKind) == 0)
            {
                return false;
            }
            if (f.VlanTagged ? !_hasVlans || f.VlanId < _vlanLow || f.VlanId > _vlanHigh : _hasVlans)
            {
                return false;
            }
            if (_hasEtherType && f.EtherType != _etherType)
            {
                return false;
            }
            if (_needsIp)
            {
                if (f.IpFamily == IpFamily.None || (_family != IpFamily.None && f.IpFamily != _family))
                {
                    return false;
                }
                if (_hasProtocol && f.IpProtocol != _protocol)
                {
                    return false;
                }
                if (_hasSource && !_source.Contains(f.IpFamily, f.SourceIp))
                {
                    return false;
                }
                if (_hasDestination && !_destination.Contains(f.IpFamily, f.DestinationIp))
                {
                    return false;
                }
            }
            // Ports and ICMP fields exist only in a transport header; non-first fragments have none.
            if (_hasSourcePorts && (!f.HasPorts || !_sourcePorts.Contains(f.SourcePort)))
            {
                return false;
            }
            if (_hasDestinationPorts && (!f.HasPorts || !_destinationPorts.Contains(f.DestinationPort)))
            {
                return false;
            }
            if (_hasIcmpType && (!f.HasIcmp || f.IcmpType != _icmpType))
            {
                return false;
            }
            if (_hasIcmpCode && (!f.HasIcmp || f.IcmpCode != _icmpCode))
            {
                return false;
            }
            return true;
        }
    }
}

/// <summary>Frames and bytes a rule has allowed.</summary>
public readonly record struct RuleCounter(int Index, string Name, long Frames, long Bytes);

/// <summary>A snapshot of a filter's counters.</summary>
public sealed record FilterCounters(
    IReadOnlyList<RuleCounter> Rules,
    long DhcpFrames,
    long OutboundAllowedFrames,
    long OutboundAllowedBytes,
    long InboundAllowedFrames,
    long InboundAllowedBytes,
    IReadOnlyList<DropCount> Drops)
{
    public long DroppedFrames(FrameDirection direction)
    {
        long total = 0;
        foreach (var d in Drops)
        {
            if (d.Direction == direction)
            {
                total += d.Frames;
            }
        }
        return total;
    }
}
