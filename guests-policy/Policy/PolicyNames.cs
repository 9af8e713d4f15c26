using System.Globalization;

namespace SecureVmm.Policy.Policy;

/// <summary>
/// How the policy spells its enumerations: one table per enumeration, used both to parse and
/// to print, so the two can never disagree. Spellings are case-sensitive.
/// </summary>
public static class PolicyNames
{
    public static readonly IReadOnlyDictionary<string, ClassificationLevel> Levels = new Dictionary<string, ClassificationLevel>(StringComparer.Ordinal)
    {
        ["UNCLASSIFIED"] = ClassificationLevel.Unclassified,
        ["RESTRICTED"] = ClassificationLevel.Restricted,
        ["CONFIDENTIAL"] = ClassificationLevel.Confidential,
        ["SECRET"] = ClassificationLevel.Secret,
        ["TOP SECRET"] = ClassificationLevel.TopSecret,
    };

    public static readonly IReadOnlyDictionary<string, LabelColour> Colours = new Dictionary<string, LabelColour>(StringComparer.Ordinal)
    {
        ["green"] = LabelColour.Green,
        ["blue"] = LabelColour.Blue,
        ["yellow"] = LabelColour.Yellow,
        ["orange"] = LabelColour.Orange,
        ["red"] = LabelColour.Red,
        ["purple"] = LabelColour.Purple,
        ["grey"] = LabelColour.Grey,
    };

    /// <summary>Guest-visible devices a policy may ask for (the PIC, PIT and PCI host bridge are always present).</summary>
    public static readonly IReadOnlyDictionary<string, DeviceKind> Devices = new Dictionary<string, DeviceKind>(StringComparer.Ordinal)
    {
        ["serial"] = DeviceKind.Serial,
        ["vga"] = DeviceKind.Vga,
        ["keyboard"] = DeviceKind.Keyboard,
        ["rtc"] = DeviceKind.Rtc,
        ["virtio-net"] = DeviceKind.VirtioNet,
    };

    public static readonly IReadOnlyDictionary<string, ConsoleKind> Consoles = new Dictionary<string, ConsoleKind>(StringComparer.Ordinal)
    {
        ["serial"] = ConsoleKind.Serial,
        ["vga"] = ConsoleKind.Vga,
        ["none"] = ConsoleKind.None,
    };

    public static readonly IReadOnlyDictionary<string, ClockMode> Clocks = new Dictionary<string, ClockMode>(StringComparer.Ordinal)
    {
        ["deterministic"] = ClockMode.Deterministic,
        ["realtime"] = ClockMode.Realtime,
    };

    public static readonly IReadOnlyDictionary<string, StorageKind> StorageKinds = new Dictionary<string, StorageKind>(StringComparer.Ordinal)
    {
        ["ephemeral"] = StorageKind.Ephemeral,
        ["persistent"] = StorageKind.Persistent,
    };

    public static readonly IReadOnlyDictionary<string, FilterDirection> Directions = new Dictionary<string, FilterDirection>(StringComparer.Ordinal)
    {
        ["in"] = FilterDirection.In,
        ["out"] = FilterDirection.Out,
    };

    public static readonly IReadOnlyDictionary<string, FilterAction> Actions = new Dictionary<string, FilterAction>(StringComparer.Ordinal)
    {
        ["allow"] = FilterAction.Allow,
        ["deny"] = FilterAction.Deny,
    };

    /// <summary>EtherType names (IEEE 802.3 type field; IANA "IEEE 802 Numbers"); "0xNNNN" also accepted.</summary>
    public static readonly IReadOnlyDictionary<string, ushort> EtherTypes = new Dictionary<string, ushort>(StringComparer.Ordinal)
    {
        ["ipv4"] = 0x0800,
        ["arp"] = 0x0806,
        ["ipv6"] = 0x86DD,
    };

    public static readonly IReadOnlyDictionary<string, IpProtocol> Protocols = new Dictionary<string, IpProtocol>(StringComparer.Ordinal)
    {
        ["tcp"] = IpProtocol.Tcp,
        ["udp"] = IpProtocol.Udp,
        ["icmp"] = IpProtocol.Icmp,
        ["icmpv6"] = IpProtocol.IcmpV6,
    };

    public static readonly IReadOnlyList<string> BackendTypes = ["tap", "udp", "pcap", "none"];

    public static string Level(ClassificationLevel level) => Levels.First(p => p.Value == level).Key;
    public static string Colour(LabelColour colour) => Colours.First(p => p.Value == colour).Key;
    public static string Device(DeviceKind device) => Devices.First(p => p.Value == device).Key;
    public static string Console(ConsoleKind console) => Consoles.First(p => p.Value == console).Key;
    public static string Clock(ClockMode clock) => Clocks.First(p => p.Value == clock).Key;

    public static string Mac(ulong value) => string.Create(CultureInfo.InvariantCulture,
        $"{(value >> 40) & 0xFF:x2}:{(value >> 32) & 0xFF:x2}:{(value >> 24) & 0xFF:x2}:{(value >> 16) & 0xFF:x2}:{(value >> 8) & 0xFF:x2}:{value & 0xFF:x2}");

    /// <summary>"a, b or c" for messages that list what was expected.</summary>
    public static string OneOf<T>(IReadOnlyDictionary<string, T> table) => OneOf(table.Keys.ToList());

    public static string OneOf(IReadOnlyList<string> names) =>
        names.Count == 1 ? $"\"{names[0]}\"" : string.Join(", ", names.Take(names.Count - 1).Select(n => $"\"{n}\"")) + $" or \"{names[^1]}\"";
}
