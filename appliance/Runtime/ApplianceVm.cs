using System.Globalization;
using SecureVmm.Appliance.Audit;
using SecureVmm.Appliance.Boot;
using SecureVmm.Appliance.Network;
using SecureVmm.Appliance.Terminal;
using SecureVmm.NetFilter;
using SecureVmm.NetFilter.Backends;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Audit;
using SecureVmm.Tcb.Boot;
using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Machine;
using ClockMode = SecureVmm.Tcb.Machine.ClockMode;

namespace SecureVmm.Appliance.Runtime;

/// <summary>A VM's figures for `status`: machine, audit log and network.</summary>
public sealed record VmStatus(
    string Name,
    SecurityLabel Label,
    PaneState State,
    string Detail,
    long Instructions,
    long Exits,
    double VirtualSeconds,
    ulong AuditRecords,
    string AuditPath,
    string Network,
    long FramesOut,
    long FramesIn,
    long DroppedOut,
    long DroppedIn);

/// <summary>
/// One policy VM while it runs: its machine, its own audit log, its NIC on its own network, and the
/// console pane the terminal shows. Everything here comes from the validated policy and the verified
/// image; nothing is created that the policy does not name (DESIGN.md principle 3).
/// </summary>
public sealed class ApplianceVm : IConsolePane, IDisposable
{
    private readonly VirtualMachine _machine;
    private readonly AuditWriter _audit;
    private readonly NicAttachment? _nic;
    private readonly Lock _stopLock = new();
    private int? _exitStatus;
    private string? _auditProblem;

    private ApplianceVm(VmPolicy policy, VerifiedImage image, VirtualMachine machine, AuditWriter audit, NicAttachment? nic, SerialScreen serial)
    {
        Policy = policy;
        Image = image;
        _machine = machine;
        _audit = audit;
        _nic = nic;
        Serial = serial;
    }

    public VmPolicy Policy { get; }

    public VerifiedImage Image { get; }

    public VirtualMachine Machine => _machine;

    public string VmName => Policy.Name;

    public SecurityLabel Label => Policy.Label;

    public ConsoleKind Kind => Policy.Console;

    public SerialScreen Serial { get; }

    public NicAttachment? Nic => _nic;

    public string AuditPath => Policy.Audit.Path;

    /// <summary>The process exit status for how this VM ended (DESIGN.md contract); null while it runs.</summary>
    public int? ExitStatus
    {
        get
        {
            lock (_stopLock)
            {
                return _exitStatus;
            }
        }
    }

    /// <summary>Why the audit log could not be completed, or null.</summary>
    public string? AuditProblem => _auditProblem;

    /// <summary>
    /// Builds the VM: creates its audit log (which must not exist yet) and records the policy and
    /// image decisions in it, loads the verified image into fresh RAM, and wires the NIC to its
    /// network through the network's filter. Throws <see cref="ApplianceException"/> naming the file
    /// or network when any of that fails; nothing is left open then.
    /// </summary>
    public static ApplianceVm Create(ValidatedPolicy policy, VmPolicy vm, VerifiedImage image, IAuditSigner? signer, NetworkSwitchboard switchboard)
    {
        AuditWriter audit = OpenAudit(vm, signer);
        VirtualMachine? machine = null;
        NicAttachment? nic = null;
        try
        {
            // The appliance's decisions come first in the log: which policy, which image and signer.
            Append(audit, AuditRecord.PolicyLoaded(Convert.FromHexString(policy.Sha256)), vm);
            if (!AuditRecord.TryParseKeyId(image.SignerKeyId, out ulong keyId))
            {
                throw new ApplianceException($"image {image.SourcePath}: signer key id '{image.SignerKeyId}' is not 16 hex digits");
            }
            Append(audit, AuditRecord.ImageVerified(0, keyId, Convert.FromHexString(image.ManifestSha256)), vm);

            var serial = new SerialScreen();
            bool hasNic = vm.Devices.Contains(DeviceKind.VirtioNet);
            byte[] mac = new byte[6];
            new MacAddress(vm.Network.MacAddress).Write(mac);
            machine = new VirtualMachine(new MachineConfig
            {
                Name = vm.Name,
                MemoryBytes = (long)vm.MemoryMiB * 1024 * 1024,
                Clock = vm.Clock == SecureVmm.Policy.Policy.ClockMode.Realtime ? ClockMode.Realtime : ClockMode.Deterministic,
                Serial = serial,
                RtcStart = DateTimeOffset.UtcNow,
                Recorder = new AuditRecorder(audit, 0, 0, vm.Audit.RecordData),
                NicMac = hasNic ? mac : null,
                Devices = DevicesFor(vm),
            });
            machine.Boot(LoadImage(machine, image, vm));
            if (hasNic)
            {
                try
                {
                    nic = new NicAttachment(machine.Nic!, vm.Network.Name, PolicyNetworks.FilterFor(vm.Network),
                        PolicyNetworks.OpenBackend(vm.Network), new NicAuditTarget(audit, 0, 0, () => machine.VirtualTimeNs),
                        switchboard: switchboard);
                }
                catch (Exception e) when (e is NetworkBackendException or FilterConfigException or InvalidOperationException or IOException or UnauthorizedAccessException)
                {
                    throw new ApplianceException($"network {vm.Network.Name} ({vm.Network.Backend.Describe()}) for VM {vm.Name}: {e.Message}");
                }
            }
            return new ApplianceVm(vm, image, machine, audit, nic, serial);
        }
        catch
        {
            nic?.Dispose();
            machine?.Dispose();
            audit.Close();
            throw;
        }
    }

    private static OptionalDevices DevicesFor(VmPolicy vm)
    {
        var devices = OptionalDevices.None;
        foreach (var d in vm.Devices)
        {
            devices |= d switch
            {
                DeviceKind.Serial => OptionalDevices.Serial,
                DeviceKind.Vga => OptionalDevices.Vga,
                DeviceKind.Rtc => OptionalDevices.Rtc,
                _ => OptionalDevices.None,
            };
        }
        return devices;
    }

    private static AuditWriter OpenAudit(VmPolicy vm, IAuditSigner? signer)
    {
        try
        {
            string? directory = Path.GetDirectoryName(Path.GetFullPath(vm.Audit.Path));
            if (directory is not null)
            {
                Directory.CreateDirectory(directory);
            }
            return AuditWriter.Create(vm.Audit.Path, AuditLogHeader.Create([vm.Name], [vm.Network.Name]), new AuditWriterOptions { Signer = signer });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or AuditLogException)
        {
            throw new ApplianceException($"audit log {vm.Audit.Path} (vms[{vm.Name}].audit.path): {e.Message}");
        }
    }

    private static void Append(AuditWriter audit, AuditRecord record, VmPolicy vm)
    {
        if (audit.Append(in record) != AuditAppendStatus.Accepted)
        {
            throw new ApplianceException($"audit log {vm.Audit.Path}: cannot append: {audit.FailureReason ?? "closed"}");
        }
    }

    /// <summary>Loads a verified image by the kind its signed manifest declares (never by sniffing).</summary>
    private static BootPlan LoadImage(VirtualMachine machine, VerifiedImage image, VmPolicy vm)
    {
        try
        {
            ReadOnlySpan<byte> kernel = image.Kernel.Span;
            byte[] initrd = image.Initrd?.ToArray() ?? [];
            return image.Manifest.Kind switch
            {
                ImageKind.Multiboot => MultibootLoader.Load(machine.Ram, kernel, image.Manifest.CommandLine,
                    initrd.Length > 0 ? [new BootModule(initrd, "initrd")] : null),
                ImageKind.Linux => BzImageLoader.Load(machine.Ram, kernel, image.Manifest.CommandLine, initrd, vm.Devices.Contains(DeviceKind.Vga)),
                _ => FlatBinaryLoader.Load(machine.Ram, kernel, image.Manifest.LoadAddress ?? 0x100000, image.Manifest.Entry ?? 0x100000, BootCpuMode.FlatProtected),
            };
        }
        catch (BootImageException e)
        {
            throw new ApplianceException($"image {image.SourcePath} for VM {vm.Name}: {e.Message}");
        }
    }

    /// <summary>Records VmStart, starts the network and the VM's thread.</summary>
    public void Start()
    {
        var start = AuditRecord.Event(AuditKind.VmStart, 0, 0);
        if (_audit.Append(in start) != AuditAppendStatus.Accepted)
        {
            throw new ApplianceException($"audit log {AuditPath}: cannot append: {_audit.FailureReason ?? "closed"}");
        }
        _nic?.Start();
        _machine.Start();
    }

    /// <summary>Asks the VM to stop (returns at once).</summary>
    public void RequestStop() => _machine.RequestStop();

    public bool HasEnded => !_machine.IsRunning;

    /// <summary>
    /// Waits for the VM to end, detaches its network (reporting pending drops), records VmStop and
    /// closes its audit log. Idempotent; returns the VM's exit status.
    /// </summary>
    public int Finish()
    {
        lock (_stopLock)
        {
            if (_exitStatus is int done)
            {
                return done;
            }
            _machine.WaitForExit(Timeout.InfiniteTimeSpan);
            _nic?.Dispose();
            MachineOutcome outcome = _machine.Outcome;
            int status = BootCommand.StatusFor(outcome);
            var stop = AuditRecord.VmStop(0, (ulong)Math.Max(0, _machine.VirtualTimeNs), status, AuditRecorder.StopReasonFor(outcome.Reason));
            _audit.Append(in stop);
            if (!_audit.Close())
            {
                _auditProblem = _audit.FailureReason ?? "the audit log could not be closed";
                status = BootCommand.ExitAuditFailure;
            }
            _exitStatus = status;
            return status;
        }
    }

    public VmStatus ReadStatus()
    {
        PaneStatus pane = Status;
        FilterCounters? counters = _nic?.Filter.ReadCounters();
        return new VmStatus(VmName, Label, pane.State, pane.Detail, pane.Instructions, pane.Exits, _machine.VirtualTimeNs / 1e9,
            _audit.LastSequence, AuditPath, Policy.Network.Name,
            counters?.OutboundAllowedFrames ?? 0, counters?.InboundAllowedFrames ?? 0,
            counters?.DroppedFrames(FrameDirection.Outbound) ?? 0, counters?.DroppedFrames(FrameDirection.Inbound) ?? 0);
    }

    public PaneStatus Status
    {
        get
        {
            PaneState state = _machine.IsRunning ? (_machine.IsPaused ? PaneState.Paused : PaneState.Running) : PaneState.Stopped;
            string detail = state == PaneState.Stopped ? _machine.Outcome.Message : "";
            return new PaneStatus(state, detail, _machine.InstructionCount, _machine.ExitCount);
        }
    }

    public VgaScreen? VgaSnapshot() => Policy.Devices.Contains(DeviceKind.Vga) ? _machine.Vga.Snapshot() : null;

    /// <summary>
    /// Host keys for this VM: to COM1 for a serial console; as scan codes to the keyboard for a VGA
    /// console, and only when the policy gives the VM a keyboard. Bytes with no key are dropped.
    /// </summary>
    public void SendInput(ReadOnlySpan<byte> bytes)
    {
        if (Policy.Console == ConsoleKind.Serial && Policy.Devices.Contains(DeviceKind.Serial))
        {
            _machine.Serial.EnqueueInput(bytes);
        }
        else if (Policy.Console == ConsoleKind.Vga && Policy.Devices.Contains(DeviceKind.Keyboard))
        {
            TypeKeys(bytes);
        }
    }

    private void TypeKeys(ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
        {
            switch (b)
            {
                case (byte)'\r' or (byte)'\n':
                    _machine.Keyboard.PressKey("Enter");
                    break;
                case 0x7F or 0x08:
                    _machine.Keyboard.PressKey("Backspace");
                    break;
                case (byte)'\t':
                    _machine.Keyboard.PressKey("Tab");
                    break;
                default:
                    if (b is >= 0x20 and < 0x7F && ScanCodes.TryGetCharacter((char)b, out _, out _))
                    {
                        _machine.Keyboard.TypeText(((char)b).ToString());
                    }
                    break;
            }
        }
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{VmName} ({Label})");

    public void Dispose()
    {
        _machine.RequestStop();
        Finish();
        _machine.Dispose();
    }
}

/// <summary>A problem that keeps the appliance from starting or running a VM; the message names the file, field or network.</summary>
public sealed class ApplianceException : Exception
{
    public ApplianceException()
    {
    }

    public ApplianceException(string message)
        : base(message)
    {
    }

    public ApplianceException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
