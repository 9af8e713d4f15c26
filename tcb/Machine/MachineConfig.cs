using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Machine;

/// <summary>How a VM's virtual clock advances (DESIGN.md, principle 5).</summary>
public enum ClockMode : byte
{
    /// <summary>Virtual time advances with retired instructions; HLT jumps it to the next timer
    /// deadline. A VM's execution then depends only on its image and inputs.</summary>
    Deterministic = 0,
    /// <summary>Virtual time follows the host's monotonic clock; a halted VM sleeps until its next
    /// timer or device event and uses no host CPU meanwhile.</summary>
    Realtime = 1,
}

/// <summary>
/// The audit hook at the machine's single exit dispatch point. <see cref="TryRecord"/> is called
/// for every exit before its effect reaches the guest; returning false means the record could
/// not be kept, and the machine stops the VM at once (fail secure: nothing runs unaudited).
/// </summary>
public interface IExitRecorder
{
    bool TryRecord(in VmExit exit, long virtualTimeNs);

    /// <summary>Why recording failed (file and error), when <see cref="TryRecord"/> returned false.</summary>
    string? FailureReason { get; }
}

/// <summary>What one VM is made of. Everything a guest can touch is named here.</summary>
public sealed record MachineConfig
{
    /// <summary>The VM's name, for messages and status.</summary>
    public string Name { get; init; } = "vm";

    /// <summary>Guest RAM in bytes (a multiple of 4 KiB, at least 2 MiB).</summary>
    public long MemoryBytes { get; init; } = 64L * 1024 * 1024;

    public ClockMode Clock { get; init; } = ClockMode.Deterministic;

    /// <summary>Virtual nanoseconds per retired instruction in deterministic mode (1 = a 1 GHz virtual CPU).</summary>
    public long NanosecondsPerInstruction { get; init; } = 1;

    /// <summary>Where COM1's output goes; null discards it.</summary>
    public ISerialOutput? Serial { get; init; }

    /// <summary>QEMU isa-debug-exit at port 0xF4 (dev boot only).</summary>
    public bool DebugExit { get; init; }

    /// <summary>The RTC's time at virtual time zero (the VM's own clock starts there).</summary>
    public DateTimeOffset RtcStart { get; init; } = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>The audit hook; null runs without an audit log (dev boot without --audit).</summary>
    public IExitRecorder? Recorder { get; init; }

    /// <summary>The MAC address of the VM's virtio-net NIC (6 bytes), or null for a VM without a NIC.</summary>
    public byte[]? NicMac { get; init; }

    /// <summary>Instructions per scheduling slice: how often the run loop syncs clocks and checks requests.</summary>
    public long SliceInstructions { get; init; } = 200_000;

    /// <summary>The optional devices (serial, VGA, RTC) the machine has; the policy's device list decides.</summary>
    public OptionalDevices Devices { get; init; } = OptionalDevices.All;
}
