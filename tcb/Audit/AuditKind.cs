using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Audit;

/// <summary>
/// What an audit record is about. Values 1..11 are the VM exits of <see cref="ExitKind"/>, with the
/// same numbers; values from 32 up are the appliance's own decisions about a VM. The numbers are
/// part of the on-disk format (docs/audit-format.md, "Record kinds"): never renumber; add new kinds
/// with new numbers and a new format version.
/// </summary>
public enum AuditKind : byte
{
    IoIn = ExitKind.IoIn,
    IoOut = ExitKind.IoOut,
    MmioRead = ExitKind.MmioRead,
    MmioWrite = ExitKind.MmioWrite,
    Hlt = ExitKind.Hlt,
    Cpuid = ExitKind.Cpuid,
    Rdmsr = ExitKind.Rdmsr,
    Wrmsr = ExitKind.Wrmsr,
    Shutdown = ExitKind.Shutdown,
    Reset = ExitKind.Reset,
    DebugExit = ExitKind.DebugExit,

    /// <summary>The appliance started the VM (after its image and policy were verified).</summary>
    VmStart = 32,
    /// <summary>The VM stopped: <see cref="AuditRecord.Value"/> is its exit status, <see cref="AuditRecord.Reason"/> a <see cref="VmStopReason"/>.</summary>
    VmStop = 33,
    /// <summary>The VM's boot image verified: signer key id and SHA-256 of the image.</summary>
    ImageVerified = 34,
    /// <summary>The policy the appliance runs was loaded and validated: its SHA-256.</summary>
    PolicyLoaded = 35,
    /// <summary>The network filter dropped frames: network, rule/reason, exact count, a sample of the first frame.</summary>
    FramesDropped = 36,
}

/// <summary>Why a VM stopped (the <see cref="AuditKind.VmStop"/> record's reason code). Part of the format.</summary>
public enum VmStopReason : uint
{
    PowerOff = 0,
    DebugExit = 1,
    TripleFault = 2,
    Reset = 3,
    AuditFailure = 4,
    Operator = 5,
    VmmFault = 6,
}

/// <summary>The kinds the format knows, as data: which are VM exits, and their names for tools.</summary>
public static class AuditKinds
{
    private static readonly string?[] Names = BuildNames();

    private static string?[] BuildNames()
    {
        var names = new string?[256];
        foreach (AuditKind kind in Enum.GetValues<AuditKind>())
        {
            names[(byte)kind] = kind.ToString();
        }
        return names;
    }

    /// <summary>True when <paramref name="kind"/> is a kind this format version defines.</summary>
    public static bool IsDefined(byte kind) => Names[kind] is not null;

    /// <summary>True for the VM-exit kinds (1..11), false for appliance events.</summary>
    public static bool IsExit(AuditKind kind) => (byte)kind is >= 1 and <= 11;

    /// <summary>The kind's name ("IoOut", "VmStart" ...), or its number for an unknown value.</summary>
    public static string Name(AuditKind kind) => Names[(byte)kind] ?? ((byte)kind).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Parses a kind name (case-insensitive, '-' and '_' ignored) or number; false when unknown.</summary>
    public static bool TryParse(string text, out AuditKind kind)
    {
        string squashed = text.Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal);
        for (int i = 0; i < Names.Length; i++)
        {
            if (Names[i] is { } name && string.Equals(name, squashed, StringComparison.OrdinalIgnoreCase))
            {
                kind = (AuditKind)i;
                return true;
            }
        }
        if (byte.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out byte n) && IsDefined(n))
        {
            kind = (AuditKind)n;
            return true;
        }
        kind = default;
        return false;
    }
}
