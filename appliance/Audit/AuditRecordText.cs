using System.Globalization;
using SecureVmm.Tcb.Audit;

namespace SecureVmm.Appliance.Audit;

/// <summary>How the audit tools show a record to a person: kind-specific details, times, names.</summary>
public static class AuditRecordText
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Hex(ulong value) => "0x" + value.ToString("x", Inv);

    /// <summary>Virtual time as seconds with nanosecond digits.</summary>
    public static string Time(ulong ns) => (ns / 1_000_000_000).ToString(Inv) + "." + (ns % 1_000_000_000).ToString("D9", Inv);

    public static string CsEip(in AuditRecord r) => r.Cs.ToString("x4", Inv) + ":" + r.Eip.ToString("x8", Inv);

    public static string VmName(AuditLogHeader header, ushort id) => id < header.VmNames.Count ? header.VmNames[id] : "#" + id.ToString(Inv);

    public static string NetworkName(AuditLogHeader header, ushort id) => id < header.NetworkNames.Count ? header.NetworkNames[id] : "#" + id.ToString(Inv);

    public static string StopReason(uint reason) => Enum.IsDefined((VmStopReason)reason) ? ((VmStopReason)reason).ToString() : reason.ToString(Inv);

    public static string Details(in AuditRecord r, AuditLogHeader header) => r.Kind switch
    {
        AuditKind.IoIn or AuditKind.IoOut => $"port {Hex(r.Port)} size {r.Size} value {Hex(r.Value)}",
        AuditKind.MmioRead or AuditKind.MmioWrite => $"address {Hex(r.Address)} size {r.Size} value {Hex(r.Value)}",
        AuditKind.Cpuid => $"leaf {Hex(r.Leaf)} subleaf {Hex(r.Subleaf)} -> eax {Hex(r.Eax)} ebx {Hex(r.Ebx)} ecx {Hex(r.Ecx)} edx {Hex(r.Edx)}",
        AuditKind.Rdmsr or AuditKind.Wrmsr => $"msr {Hex(r.Address)} value {Hex(r.Value)}",
        AuditKind.DebugExit => $"value {Hex(r.Value)}",
        AuditKind.VmStop => $"exit status {r.Value.ToString(Inv)} reason {StopReason(r.Reason)}",
        AuditKind.ImageVerified => $"key {AuditRecord.FormatKeyId(r.KeyId)} sha256 {Convert.ToHexStringLower(r.Digest)}",
        AuditKind.PolicyLoaded => $"sha256 {Convert.ToHexStringLower(r.Digest)}",
        AuditKind.FramesDropped => $"network {NetworkName(header, r.Network)} reason {r.Reason.ToString(Inv)} count {r.Value.ToString(Inv)} sample {Convert.ToHexStringLower(((ReadOnlySpan<byte>)r.Sample)[..r.SampleLength])}",
        _ => "",
    };
}
