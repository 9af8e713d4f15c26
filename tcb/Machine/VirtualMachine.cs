using System.Diagnostics;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Cpu;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Machine;

/// <summary>Why a VM stopped. The appliance maps these to the exit statuses of DESIGN.md.</summary>
public enum StopReason : byte
{
    /// <summary>Still running (or never started).</summary>
    None = 0,
    /// <summary>The guest powered off: it halted with interrupts disabled, which nothing can end (status 0).</summary>
    PowerOff = 1,
    /// <summary>The guest wrote to the isa-debug-exit port (status (V&lt;&lt;1)|1).</summary>
    DebugExit = 2,
    /// <summary>Triple fault: the CPU entered shutdown (status 3).</summary>
    TripleFault = 3,
    /// <summary>The guest asked for a reset (keyboard controller 0xFE, port 0xCF9). A VM is not rebooted.</summary>
    Reset = 4,
    /// <summary>The audit log could not be written; the VM was stopped before the exit took effect (status 4).</summary>
    AuditFailure = 5,
    /// <summary>The host stopped the VM (operator, Ctrl-C, time limit).</summary>
    HostStop = 6,
    /// <summary>The VMM itself failed while running this VM (a bug); the message says what.</summary>
    VmmFault = 7,
}

/// <summary>How and why a VM ended.</summary>
public readonly record struct MachineOutcome(StopReason Reason, uint Value, string Message);

/// <summary>
/// One VM: CPU + GuestRam + physical address map + devices + the exit dispatch loop, on its own
/// thread. Every exit passes through <see cref="OnExit"/>, the single dispatch point where the
/// audit hook records it before its effect is delivered. VMs share no mutable state: each has its
/// own RAM, devices, clock and thread.
/// </summary>
public sealed class VirtualMachine : IExitHandler, IDisposable
{
    private readonly MachineConfig _config;
    private readonly GuestRam _ram;
    private readonly PhysicalMemoryMap _map;
    private readonly PortBus _ports;
    private readonly DeviceClock _clock;
    private readonly MachineRequests _requests;
    private readonly IExitRecorder? _recorder;
    private readonly Cpu.Cpu _cpu;
    private readonly AutoResetEvent _wake = new(false);
    private readonly Stopwatch _realtime = new();
    private readonly object _stateLock = new();

    private Thread? _thread;
    private volatile bool _stopRequested;
    private volatile bool _pauseRequested;
    private volatile bool _paused;
    private long _idleNs;        // deterministic mode: virtual time skipped while halted
    private long _exitCount;
    private MachineOutcome _outcome;
    private bool _disposed;

    public VirtualMachine(MachineConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        _config = config;
        _recorder = config.Recorder;
        _ram = new GuestRam(config.MemoryBytes);
        _map = new PhysicalMemoryMap(_ram);

        // The PC's fixed devices, and only these (DESIGN.md, devices).
        Devices = new PcDevices(new PcDeviceOptions
        {
            SerialOutput = config.Serial ?? new DiscardSerialOutput(),
            RamBytes = config.MemoryBytes,
            RtcStart = config.RtcStart,
            DebugExit = config.DebugExit,
            Attached = config.Devices,
        });
        _ports = Devices.Ports;
        _clock = Devices.Clock;
        _requests = Devices.Requests;
        Devices.Com1.InputSignal = () => _wake.Set();
        Devices.Keyboard.InputSignal = () => _wake.Set();
        if (config.Devices.HasFlag(OptionalDevices.Vga))
        {
            _map.AddMmio((uint)VgaText.BufferBase, VgaText.BufferSize, Devices.Vga);
        }
        if (config.NicMac is not null)
        {
            Nic = new VirtioNet(_map, Pic, config.NicMac);
            Devices.Pci.AddFunction(NicPciDevice, 0, Nic);
            _ports.Register(Nic, Nic.IoBase, VirtioNet.BarSize);
            Nic.InputSignal = () => _wake.Set();
        }

        _cpu = new Cpu.Cpu(_map, this) { Interrupts = Pic, CompileInBackground = true };
        if (config.Clock == ClockMode.Realtime)
        {
            // Realtime: the TSC follows the VM's virtual clock, which keeps running while the guest
            // is halted (DESIGN.md principle 5); counted in instructions it would stand still in
            // idle time, and a guest whose clocksource is the TSC would never see a sleep end.
            _cpu.TscClock = () => (ulong)Math.Max(0, CurrentVirtualNs());
        }
    }

    public string Name => _config.Name;
    public MachineConfig Config => _config;
    public GuestRam Ram => _ram;
    public PhysicalMemoryMap MemoryMap => _map;
    public Cpu.Cpu Cpu => _cpu;
    /// <summary>The VM's device model (one instance per VM; nothing shared).</summary>
    public PcDevices Devices { get; }
    public PicPair Pic => Devices.Pic;
    public Uart16550 Serial => Devices.Com1;
    public I8042 Keyboard => Devices.Keyboard;
    public VgaText Vga => Devices.Vga;

    /// <summary>The VM's NIC (PCI 00:03.0), or null.</summary>
    public VirtioNet? Nic { get; }

    public const int NicPciDevice = 3;
    public DeviceClock Clock => _clock;

    /// <summary>Guest instructions retired so far.</summary>
    public long InstructionCount => _cpu.InstructionCount;

    /// <summary>Exits dispatched so far.</summary>
    public long ExitCount => Interlocked.Read(ref _exitCount);

    /// <summary>Virtual time in nanoseconds.</summary>
    public long VirtualTimeNs => _clock.NowNs;

    public bool IsRunning => _thread is { IsAlive: true };
    public bool IsPaused => _paused;

    /// <summary>How the VM ended (Reason None while it runs).</summary>
    public MachineOutcome Outcome
    {
        get
        {
            lock (_stateLock)
            {
                return _outcome;
            }
        }
    }

    /// <summary>Applies a loader's boot plan to the CPU.</summary>
    public void Boot(BootPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (plan.Mode == BootCpuMode.FlatProtected)
        {
            _cpu.EnterFlatProtectedMode(plan.EntryEip, plan.Eax, plan.Ebx, plan.Esi);
            if (plan.Esp != 0)
            {
                _cpu.Esp = plan.Esp;
            }
        }
        else
        {
            _cpu.SetRealModeEntry(plan.RealModeCs, (ushort)(plan.EntryEip - ((uint)plan.RealModeCs << 4)));
        }
    }

    /// <summary>Starts the VM's thread.</summary>
    public void Start()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_thread is not null)
        {
            throw new InvalidOperationException($"VM '{Name}' was already started");
        }
        _thread = new Thread(RunLoop) { Name = $"vm:{Name}", IsBackground = true };
        _thread.Start();
    }

    /// <summary>Runs the VM on the calling thread until it stops (tests and the dev boot use this).</summary>
    public MachineOutcome RunToCompletion()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        RunLoop();
        return Outcome;
    }

    /// <summary>Asks the VM to stop; it stops at the next slice boundary or exit.</summary>
    public void RequestStop()
    {
        _stopRequested = true;
        _pauseRequested = false;
        _wake.Set();
    }

    /// <summary>Pauses at the next slice boundary; returns once paused (or stopped).</summary>
    public void Pause(TimeSpan? timeout = null)
    {
        _pauseRequested = true;
        _wake.Set();
        var clock = Stopwatch.StartNew();
        while (!_paused && IsRunning && clock.Elapsed < (timeout ?? TimeSpan.FromSeconds(10)))
        {
            Thread.Sleep(1);
        }
    }

    public void Resume()
    {
        _pauseRequested = false;
        _wake.Set();
    }

    /// <summary>Waits for the VM's thread to end.</summary>
    public bool WaitForExit(TimeSpan timeout) => _thread is null || _thread.Join(timeout);

    /// <summary>Stops the VM, waits for it, and scrubs its RAM.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        RequestStop();
        if (_thread is not null && _thread != Thread.CurrentThread)
        {
            _thread.Join();
        }
        _disposed = true;
        _ram.Dispose();
        _wake.Dispose();
    }

    // ------------------------------------------------------------------ run loop

    private void RunLoop()
    {
        try
        {
            _realtime.Start();
            while (true)
            {
                if (_stopRequested)
                {
                    Finish(StopReason.HostStop, 0, "stopped by the host");
                    return;
                }
                if (_pauseRequested)
                {
                    _realtime.Stop();
                    _paused = true;
                    while (_pauseRequested && !_stopRequested)
                    {
                        _wake.WaitOne(100);
                    }
                    _paused = false;
                    _realtime.Start();
                    continue;
                }

                SyncClock();
                _clock.RunDue();
                Devices.PumpHostInput();
                Nic?.PumpHostInput();

                RunStatus status = _cpu.Run(_config.SliceInstructions);
                if (Outcome.Reason != StopReason.None)
                {
                    return; // an exit (debug exit, reset, audit failure) ended the VM
                }
                switch (status)
                {
                    case RunStatus.BudgetExhausted:
                        break;
                    case RunStatus.Halted:
                        if (!WaitWhileHalted())
                        {
                            return;
                        }
                        break;
                    case RunStatus.Shutdown:
                        Finish(StopReason.TripleFault, 0, "guest triple fault: the CPU entered shutdown");
                        return;
                    case RunStatus.Stopped:
                        if (_stopRequested)
                        {
                            Finish(StopReason.HostStop, 0, "stopped by the host");
                            return;
                        }
                        break;
                }
            }
        }
#pragma warning disable CA1031 // A VMM fault must end this VM with a message, never take down the appliance.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Finish(StopReason.VmmFault, 0, $"VMM fault in VM '{Name}': {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            _realtime.Stop();
        }
    }

    /// <summary>
    /// The CPU is halted with no deliverable interrupt. HLT with IF=0 can never end (no NMI source
    /// exists), so it is the guest's power-off. Otherwise wait for the next timer deadline: jump to
    /// it in deterministic mode, sleep until it in realtime mode; host input wakes the VM early.
    /// Returns false when the VM ended.
    /// </summary>
    private bool WaitWhileHalted()
    {
        if ((_cpu.Eflags & EflagsBits.IF) == 0)
        {
            Finish(StopReason.PowerOff, 0, "guest halted with interrupts disabled (power-off)");
            return false;
        }
        SyncClock();
        _clock.RunDue();
        Devices.PumpHostInput();
        Nic?.PumpHostInput();
        if (Pic.HasPending || _stopRequested || _pauseRequested)
        {
            return true;
        }
        long deadline = _clock.NextDeadlineNs();
        if (_config.Clock == ClockMode.Deterministic)
        {
            if (deadline != long.MaxValue)
            {
                long now = CurrentVirtualNs();
                if (deadline > now)
                {
                    _idleNs += deadline - now;
                }
                SyncClock();
                _clock.RunDue();
                return true;
            }
            // Nothing timed will ever wake the guest: only host input or a host request can.
            _wake.WaitOne(250);
            return true;
        }
        long waitNs = deadline == long.MaxValue ? 250_000_000 : Math.Clamp(deadline - CurrentVirtualNs(), 0, 250_000_000);
        if (waitNs > 50_000)
        {
            _wake.WaitOne(TimeSpan.FromTicks(waitNs / 100));
        }
        else if (waitNs > 0)
        {
            Thread.Yield();
        }
        return true;
    }

    private long CurrentVirtualNs() => _config.Clock == ClockMode.Deterministic
        ? (_cpu.InstructionCount * _config.NanosecondsPerInstruction) + _idleNs
        : (long)(_realtime.Elapsed.Ticks * 100);

    private void SyncClock() => _clock.SetNow(CurrentVirtualNs());

    private void Finish(StopReason reason, uint value, string message)
    {
        lock (_stateLock)
        {
            if (_outcome.Reason == StopReason.None)
            {
                _outcome = new MachineOutcome(reason, value, message);
            }
        }
    }

    // ------------------------------------------------------------------ the single exit dispatch point

    /// <summary>
    /// Every VM exit arrives here. Order: bring the clock up to the exit's instruction; for IN,
    /// read the device so the record holds the value delivered; record the exit (a failure stops
    /// the VM before anything takes effect); then deliver the effect. Device requests raised by an
    /// OUT (reset, debug exit) become their own typed exit, also recorded.
    /// </summary>
    public ExitAction OnExit(ref VmExit exit)
    {
        Interlocked.Increment(ref _exitCount);
        if (_config.Clock == ClockMode.Deterministic)
        {
            _clock.SetNow((long)exit.InstructionCount * _config.NanosecondsPerInstruction + _idleNs);
        }
        else
        {
            SyncClock();
        }

        switch (exit.Kind)
        {
            case ExitKind.IoIn:
                exit.Value = _ports.Read(exit.Port, exit.Size);
                if (!Record(ref exit))
                {
                    return ExitAction.Stop;
                }
                break;

            case ExitKind.IoOut:
                if (!Record(ref exit))
                {
                    return ExitAction.Stop;
                }
                _ports.Write(exit.Port, exit.Size, (uint)exit.Value);
                if (TakeDeviceRequest(ref exit))
                {
                    return ExitAction.Stop;
                }
                break;

            case ExitKind.Shutdown:
                Record(ref exit);
                Finish(StopReason.TripleFault, 0, "guest triple fault: the CPU entered shutdown");
                return ExitAction.Stop;

            default:
                // MMIO (the CPU then delivers it to the mapped device), HLT, CPUID, RDMSR/WRMSR.
                if (!Record(ref exit))
                {
                    return ExitAction.Stop;
                }
                break;
        }
        return _stopRequested ? ExitAction.Stop : ExitAction.Continue;
    }

    /// <summary>Records one exit; false (after ending the VM with an audit failure) when it could not be kept.</summary>
    private bool Record(ref VmExit exit)
    {
        if (_recorder is null || _recorder.TryRecord(in exit, _clock.NowNs))
        {
            return true;
        }
        Finish(StopReason.AuditFailure, 0,
            $"audit log failure, VM '{Name}' stopped (fail secure): {_recorder.FailureReason ?? "the record could not be written"}");
        return false;
    }

    /// <summary>
    /// Turns a request a device raised during an OUT (debug exit, reset) into its own typed exit,
    /// recorded like any other, and ends the VM. Returns true when the VM must stop.
    /// </summary>
    private bool TakeDeviceRequest(ref VmExit exit)
    {
        if (!_requests.TryTake(out MachineRequestKind kind, out uint value))
        {
            return false;
        }
        switch (kind)
        {
            case MachineRequestKind.DebugExit:
                exit.Kind = ExitKind.DebugExit;
                exit.Value = value;
                Record(ref exit);
                Finish(StopReason.DebugExit, value, $"guest wrote 0x{value:X} to the debug-exit port");
                return true;
            case MachineRequestKind.Reset:
                exit.Kind = ExitKind.Reset;
                exit.Value = 0;
                Record(ref exit);
                Finish(StopReason.Reset, 0, "guest requested a reset; the VM is stopped, not rebooted");
                return true;
            default:
                return false;
        }
    }

    private sealed class DiscardSerialOutput : ISerialOutput
    {
        public void Transmit(byte value)
        {
        }
    }
}
