using System.Runtime.CompilerServices;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Audit;

/// <summary>A SHA-256 digest held inline, so records carrying one allocate nothing.</summary>
[InlineArray(Size)]
public struct Sha256Digest
{
    public const int Size = 32;
    private byte _element0;
}

/// <summary>The first bytes of a dropped frame, held inline (at most <see cref="Size"/> bytes).</summary>
[InlineArray(Size)]
public struct FrameSample
{
    /// <summary>Enough for an Ethernet, IPv4 and UDP/TCP-port header (14 + 20 + 8 bytes) plus a little.</summary>
    public const int Size = 48;
    private byte _element0;
}

/// <summary>
/// One audit record: a VM exit or an appliance event. A plain value type so the machine's exit
/// dispatch point can fill one on the stack and hand it to <see cref="AuditWriter.Append"/> without
/// allocating. Which detail fields mean something depends on <see cref="Kind"/>
/// (docs/audit-format.md, "Record kinds"):
/// IoIn/IoOut: Port, Size, Value. MmioRead/MmioWrite: Address, Size, Value.
/// Cpuid: Leaf, Subleaf, Eax..Edx (the registers returned). Rdmsr/Wrmsr: Address = MSR, Value.
/// DebugExit: Value. Hlt, Shutdown, Reset, VmStart: none. VmStop: Value = exit status, Reason = <see cref="VmStopReason"/>.
/// ImageVerified: KeyId, Digest. PolicyLoaded: Digest.
/// FramesDropped: Network, Reason (filter rule number or reason code), Value = exact count, Sample/SampleLength.
/// Fields a kind does not use are not stored and read back as zero.
/// </summary>
public struct AuditRecord
{
    public AuditKind Kind;
    /// <summary>Index into the log header's VM name table.</summary>
    public ushort VmId;
    public ushort Vcpu;
    /// <summary>Assigned by the writer: 1 for the log's first record, contiguous after that.</summary>
    public ulong Sequence;
    /// <summary>The VM's virtual time in nanoseconds (DESIGN.md principle 5: time belongs to the VMM).</summary>
    public ulong VirtualTimeNs;
    public ushort Cs;
    public uint Eip;
    public ushort Port;
    public byte Size;
    public ulong Address;
    public ulong Value;
    public uint Leaf;
    public uint Subleaf;
    public uint Eax;
    public uint Ebx;
    public uint Ecx;
    public uint Edx;
    /// <summary>Index into the log header's network name table (FramesDropped).</summary>
    public ushort Network;
    public uint Reason;
    /// <summary>An Ed25519 key id: the first 8 bytes of SHA-256(public key), big-endian, so its hex is the key file's id.</summary>
    public ulong KeyId;
    public Sha256Digest Digest;
    public byte SampleLength;
    public FrameSample Sample;

    /// <summary>
    /// The record for one VM exit. IN and MMIO-read values are whatever the handler put into
    /// <paramref name="exit"/> before recording (the dispatch point records after the device answered
    /// and before the value reaches the guest).
    /// </summary>
    public static AuditRecord FromExit(in VmExit exit, ushort vmId, ushort vcpu, ulong virtualTimeNs)
    {
        var record = new AuditRecord
        {
            Kind = (AuditKind)exit.Kind,
            VmId = vmId,
            Vcpu = vcpu,
            VirtualTimeNs = virtualTimeNs,
            Cs = exit.Cs,
            Eip = exit.Eip,
        };
        switch (exit.Kind)
        {
            case ExitKind.IoIn:
            case ExitKind.IoOut:
                record.Port = exit.Port;
                record.Size = exit.Size;
                record.Value = exit.Value;
                break;
            case ExitKind.MmioRead:
            case ExitKind.MmioWrite:
                record.Address = exit.Address;
                record.Size = exit.Size;
                record.Value = exit.Value;
                break;
            case ExitKind.Cpuid:
                record.Leaf = exit.Leaf;
                record.Subleaf = exit.Subleaf;
                record.Eax = exit.Eax;
                record.Ebx = exit.Ebx;
                record.Ecx = exit.Ecx;
                record.Edx = exit.Edx;
                break;
            case ExitKind.Rdmsr:
            case ExitKind.Wrmsr:
                record.Address = exit.Address;
                record.Value = exit.Value;
                break;
            case ExitKind.DebugExit:
                record.Value = exit.Value;
                break;
            default:
                break;
        }
        return record;
    }

    /// <summary>Builds a record for an appliance event with no details (VmStart).</summary>
    public static AuditRecord Event(AuditKind kind, ushort vmId, ulong virtualTimeNs) =>
        new() { Kind = kind, VmId = vmId, VirtualTimeNs = virtualTimeNs };

    public static AuditRecord VmStop(ushort vmId, ulong virtualTimeNs, int exitStatus, VmStopReason reason) =>
        new() { Kind = AuditKind.VmStop, VmId = vmId, VirtualTimeNs = virtualTimeNs, Value = (uint)exitStatus, Reason = (uint)reason };

    public static AuditRecord ImageVerified(ushort vmId, ulong keyId, ReadOnlySpan<byte> sha256)
    {
        var record = new AuditRecord { Kind = AuditKind.ImageVerified, VmId = vmId, KeyId = keyId };
        sha256[..Sha256Digest.Size].CopyTo(record.Digest);
        return record;
    }

    public static AuditRecord PolicyLoaded(ReadOnlySpan<byte> sha256)
    {
        var record = new AuditRecord { Kind = AuditKind.PolicyLoaded };
        sha256[..Sha256Digest.Size].CopyTo(record.Digest);
        return record;
    }

    /// <summary>A FramesDropped record; the sample keeps the first <see cref="FrameSample.Size"/> bytes of <paramref name="firstFrame"/>.</summary>
    public static AuditRecord FramesDropped(ushort vmId, ulong virtualTimeNs, ushort network, uint reason, ulong count, ReadOnlySpan<byte> firstFrame)
    {
        var record = new AuditRecord
        {
            Kind = AuditKind.FramesDropped,
            VmId = vmId,
            VirtualTimeNs = virtualTimeNs,
            Network = network,
            Reason = reason,
            Value = count,
        };
        int n = Math.Min(firstFrame.Length, FrameSample.Size);
        firstFrame[..n].CopyTo(record.Sample);
        record.SampleLength = (byte)n;
        return record;
    }

    /// <summary>Parses an Ed25519 key id as the key files print it (16 hex digits).</summary>
    public static bool TryParseKeyId(string hex, out ulong keyId) =>
        ulong.TryParse(hex, System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out keyId) && hex.Length == 16;

    public static string FormatKeyId(ulong keyId) => keyId.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
}
