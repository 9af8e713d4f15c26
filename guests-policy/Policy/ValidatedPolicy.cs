using System.Collections.Immutable;
using System.Net;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Policy.Policy;

// The policy after validation: immutable, typed, with every path made absolute and every
// cross-reference resolved. This is the only form of the policy the runtime consumes
// (DESIGN.md principle 3; the Muen model: the kernel consumes a checked, static description).

/// <summary>Classification levels, lowest to highest.</summary>
public enum ClassificationLevel
{
    Unclassified,
    Restricted,
    Confidential,
    Secret,
    TopSecret,
}

/// <summary>Colours the console frame may carry; a label pairs a level with one of them.</summary>
public enum LabelColour
{
    Green,
    Blue,
    Yellow,
    Orange,
    Red,
    Purple,
    Grey,
}

public readonly record struct SecurityLabel(ClassificationLevel Level, LabelColour Colour)
{
    public override string ToString() => $"{PolicyNames.Level(Level)}/{PolicyNames.Colour(Colour)}";
}

public sealed record TrustAnchor(string Id, Ed25519PublicKey Key, ImmutableArray<string> MaySignFor)
{
    public bool MaySignForVm(string vmName) => MaySignFor.Contains(vmName, StringComparer.Ordinal);
}

/// <summary>Where a network's frames go on the host.</summary>
public abstract record NetworkBackend
{
    /// <summary>The backend's type as the policy spells it.</summary>
    public abstract string Type { get; }
    public abstract string Describe();
}

/// <summary>A Linux TAP device, optionally enslaved to a bridge and/or created in a network namespace.</summary>
public sealed record TapBackend(string TapName, string? Bridge, string? NetworkNamespace) : NetworkBackend
{
    public override string Type => "tap";
    public override string Describe() =>
        "tap " + TapName + (Bridge is null ? "" : " bridge " + Bridge) + (NetworkNamespace is null ? "" : " netns " + NetworkNamespace);
}

/// <summary>QEMU's "-netdev socket,udp=REMOTE,localaddr=LOCAL": one UDP datagram per Ethernet frame.</summary>
public sealed record UdpBackend(IPEndPoint Remote, IPEndPoint Local) : NetworkBackend
{
    public override string Type => "udp";
    public override string Describe() => $"udp {Local} -> {Remote}";
}

/// <summary>Frames the guest sends are written to a pcap file; nothing is received.</summary>
public sealed record PcapBackend(string FilePath) : NetworkBackend
{
    public override string Type => "pcap";
    public override string Describe() => "pcap " + FilePath;
}

/// <summary>A NIC with nothing behind it: frames are filtered, counted, audited and dropped.</summary>
public sealed record NoBackend : NetworkBackend
{
    public override string Type => "none";
    public override string Describe() => "none";
}

/// <summary>An address assigned to the VM on its network, with its prefix length ("10.1.0.2/24").</summary>
public sealed record InterfaceAddress(IPAddress Address, int PrefixLength)
{
    public override string ToString() => $"{Address}/{PrefixLength}";
}

public enum FilterDirection { In, Out }

public enum FilterAction { Allow, Deny }

/// <summary>IP protocol numbers (IANA "Assigned Internet Protocol Numbers").</summary>
public enum IpProtocol : byte
{
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
    IcmpV6 = 58,
}

public readonly record struct PortRange(ushort First, ushort Last);

public readonly record struct RateLimit(int PacketsPerSecond, int Burst);

/// <summary>
/// One filter rule as the policy states it. Null fields match anything. The appliance
/// translates these to netfilter's own rule type; this record knows nothing of frames.
/// </summary>
public sealed record FilterRulePolicy(
    FilterDirection Direction,
    FilterAction Action,
    ushort? EtherType,
    IpProtocol? Protocol,
    IPNetwork? Cidr,
    PortRange? Ports,
    RateLimit? RateLimit);

public sealed record FilterPolicy(FilterAction DefaultAction, int MaxFrameSize, bool AntiSpoofing, ImmutableArray<FilterRulePolicy> Rules);

public sealed record NetworkPolicy(
    string Name,
    SecurityLabel Label,
    NetworkBackend Backend,
    ulong MacAddress,
    ImmutableArray<InterfaceAddress> Addresses,
    FilterPolicy Filter)
{
    /// <summary>The MAC as "aa:bb:cc:dd:ee:ff" (the value is 48 bits in network order, as netfilter's MacAddress holds it).</summary>
    public string MacText => PolicyNames.Mac(MacAddress);
}

public enum DeviceKind { Serial, Vga, Keyboard, Rtc, VirtioNet }

public enum ConsoleKind { Serial, Vga, None }

public enum ClockMode { Deterministic, Realtime }

public enum StorageKind { Ephemeral, Persistent }

public sealed record StoragePolicy(string Name, StorageKind Kind, string? Path, int SizeMiB);

public sealed record AuditPolicy(string Path, bool RecordData);

/// <summary>Which image a VM boots and who may have signed it.</summary>
public sealed record ImagePolicy(string Path, string Name, ImmutableArray<TrustAnchor> Signers, bool Sealed, bool AllowRollback)
{
    public ImmutableArray<Ed25519PublicKey> SignerKeys => [.. Signers.Select(s => s.Key)];
}

public sealed record VmPolicy(
    string Name,
    SecurityLabel Label,
    int MemoryMiB,
    ImagePolicy Image,
    NetworkPolicy Network,
    ImmutableArray<DeviceKind> Devices,
    ConsoleKind Console,
    ClockMode Clock,
    AuditPolicy Audit,
    ImmutableArray<StoragePolicy> Storage);

/// <summary>
/// A policy that parsed, passed every rule and (when loaded with <see cref="PolicyLoader.LoadVerified"/>)
/// carries a valid administrator signature. <see cref="Sha256"/> is what the audit log records.
/// </summary>
public sealed record ValidatedPolicy(
    string SourcePath,
    string Sha256,
    string? AdminKeyId,
    string ApplianceName,
    int MemoryBudgetMiB,
    string RollbackStateFile,
    ImmutableArray<TrustAnchor> TrustAnchors,
    ImmutableArray<NetworkPolicy> Networks,
    ImmutableArray<VmPolicy> Vms)
{
    public VmPolicy Vm(string name) =>
        Vms.FirstOrDefault(v => v.Name == name) ?? throw new KeyNotFoundException($"the policy has no VM named '{name}'");
}
