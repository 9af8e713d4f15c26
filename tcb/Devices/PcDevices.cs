namespace SecureVmm.Tcb.Devices;

/// <summary>
/// The devices a policy may leave out. One that is left out is still constructed (so the machine's
/// code needs no null checks) but never attached: its ports and memory decode nothing, as on a PC
/// without that card. The 8259A pair, 8254, i8042 controller (A20, reset) and PCI host are the
/// platform itself and always present.
/// </summary>
[Flags]
public enum OptionalDevices
{
    None = 0,
    Serial = 1,
    Vga = 2,
    Rtc = 4,
    All = Serial | Vga | Rtc,
}

/// <summary>What the machine configures on the standard device set (from the policy or the dev-boot options).</summary>
public sealed record PcDeviceOptions
{
    /// <summary>Where COM1's output goes.</summary>
    public required ISerialOutput SerialOutput { get; init; }

    /// <summary>Guest RAM size, for the CMOS memory size bytes.</summary>
    public required long RamBytes { get; init; }

    /// <summary>Wall-clock time the RTC shows at virtual time zero.</summary>
    public DateTimeOffset RtcStart { get; init; } = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>Which optional devices are attached.</summary>
    public OptionalDevices Attached { get; init; } = OptionalDevices.All;

    /// <summary>Attach QEMU's isa-debug-exit at 0xF4 (dev boot only).</summary>
    public bool DebugExit { get; init; }
}

/// <summary>
/// The VM's whole device model, wired as on a PC: the 8259A pair as interrupt source, 8254 PIT
/// on IRQ0 (with port 0x61), i8042 on IRQ1, COM1 16550A on IRQ4, MC146818 RTC on IRQ8, VGA text
/// at 0xB8000 and 0x3C0-0x3DA, PCI mechanism #1 at 0xCF8-0xCFF (with the 0xCF9 reset register),
/// port 0x80, and, for dev boot only, isa-debug-exit at 0xF4. Nothing else decodes anything: every
/// other port and non-RAM address reads all-ones. One instance per VM; no state is shared.
/// </summary>
public sealed class PcDevices
{
    public DeviceClock Clock { get; } = new();
    public PortBus Ports { get; } = new();
    public MmioBus Mmio { get; } = new();
    public MachineRequests Requests { get; } = new();
    public PicPair Pic { get; } = new();
    public Pit8254 Pit { get; }
    public Uart16550 Com1 { get; }
    public Rtc146818 Rtc { get; }
    public I8042 Keyboard { get; }
    public VgaText Vga { get; } = new();
    public PciHost Pci { get; }
    public PostCodePort PostCode { get; } = new();
    public DebugExitPort? DebugExit { get; }

    /// <summary>The optional devices this machine has.</summary>
    public OptionalDevices Attached { get; }

    public PcDevices(PcDeviceOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Pic.Attach(Ports);
        Pit = new Pit8254(Clock, Pic);
        Pit.Attach(Ports);
        Attached = options.Attached;
        Com1 = new Uart16550(Clock, Pic, options.SerialOutput);
        if (Attached.HasFlag(OptionalDevices.Serial))
        {
            Com1.Attach(Ports);
        }
        Rtc = new Rtc146818(Clock, Pic, options.RtcStart);
        Rtc.SetMemorySize(options.RamBytes);
        if (Attached.HasFlag(OptionalDevices.Rtc))
        {
            Rtc.Attach(Ports);
        }
        Keyboard = new I8042(Pic, Requests);
        Keyboard.Attach(Ports);
        if (Attached.HasFlag(OptionalDevices.Vga))
        {
            Vga.Attach(Ports, Mmio);
        }
        Pci = new PciHost(Requests);
        Pci.Attach(Ports);
        Ports.Register(PostCode, PostCodePort.Port);
        if (options.DebugExit)
        {
            DebugExit = new DebugExitPort(Requests);
            Ports.Register(DebugExit, DebugExitPort.Port);
        }
    }

    /// <summary>Moves host input (serial, keys) into the devices; the machine calls it between exits.</summary>
    public void PumpHostInput()
    {
        Com1.PumpHostInput();
        Keyboard.PumpHostInput();
    }

    /// <summary>Sets virtual time and lets timers raise what fell due.</summary>
    public void AdvanceTo(long nowNs)
    {
        Clock.SetNow(nowNs);
        Clock.RunDue();
    }
}
