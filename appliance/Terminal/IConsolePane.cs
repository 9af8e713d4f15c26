using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Devices;

namespace SecureVmm.Appliance.Terminal;

/// <summary>Where a VM is in its life, as the console and `status` show it.</summary>
public enum PaneState
{
    Running,
    Paused,
    Stopped,
}

/// <summary>A VM's state and counters at one moment; <paramref name="Detail"/> says how a stopped VM ended.</summary>
public readonly record struct PaneStatus(PaneState State, string Detail, long Instructions, long Exits);

/// <summary>
/// What the console shows of one VM and where its keys go. The runtime implements it; the console
/// reads it on its own thread. The label comes from the validated policy, never from the guest:
/// the console draws it in the frame around the pane, where no guest output can reach.
/// </summary>
public interface IConsolePane
{
    string VmName { get; }

    SecurityLabel Label { get; }

    /// <summary>Which screen the pane shows by default: the serial log or the VGA text screen.</summary>
    ConsoleKind Kind { get; }

    /// <summary>The VM's COM1 output (every VM has one; for VGA VMs it is a second view).</summary>
    SerialScreen Serial { get; }

    /// <summary>The VGA text screen now, or null when the VM has no VGA device.</summary>
    VgaScreen? VgaSnapshot();

    PaneStatus Status { get; }

    /// <summary>
    /// Typed bytes from the host terminal: to COM1's receive queue for a serial console, as
    /// keyboard scan codes for a VGA console with a keyboard. Never called for an unfocused pane.
    /// </summary>
    void SendInput(ReadOnlySpan<byte> bytes);
}
