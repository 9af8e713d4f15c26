namespace SecureVmm.Tcb.Devices;

/// <summary>What a device asks the machine to do to the whole VM.</summary>
public enum MachineRequestKind : byte
{
    None = 0,
    /// <summary>The guest asked for a reset (i8042 0xFE / output-port bit 0, port 0xCF9): a Reset exit.</summary>
    Reset = 1,
    /// <summary>The guest wrote to the isa-debug-exit port: a DebugExit exit with the value written.</summary>
    DebugExit = 2,
}

/// <summary>
/// The latch through which devices report whole-VM requests. A device sets it during a port
/// access; the machine takes it right after that exit is dispatched and turns it into the typed
/// exit (Reset, DebugExit). The first request wins until it is taken, so a guest cannot replace
/// a reset with something else in the same instruction.
/// </summary>
public sealed class MachineRequests
{
    /// <summary>The pending request, or None.</summary>
    public MachineRequestKind Pending { get; private set; }

    /// <summary>The value that goes with the request (the debug-exit value).</summary>
    public uint Value { get; private set; }

    /// <summary>Which device asked (for the machine's message), e.g. "i8042".</summary>
    public string Source { get; private set; } = "";

    public void Request(MachineRequestKind kind, uint value, string source)
    {
        if (Pending == MachineRequestKind.None && kind != MachineRequestKind.None)
        {
            Pending = kind;
            Value = value;
            Source = source;
        }
    }

    /// <summary>Takes the pending request, leaving the latch empty.</summary>
    public bool TryTake(out MachineRequestKind kind, out uint value)
    {
        kind = Pending;
        value = Value;
        Pending = MachineRequestKind.None;
        Value = 0;
        return kind != MachineRequestKind.None;
    }
}
