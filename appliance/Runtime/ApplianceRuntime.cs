using System.Globalization;
using System.Text;
using SecureVmm.NetFilter;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Audit;

namespace SecureVmm.Appliance.Runtime;

/// <summary>
/// The appliance at run time: every VM of one verified policy, each on its own thread (the host
/// scheduler shares the cores between them; a halted VM sleeps and costs nothing), each with its own
/// audit log and network. Built only after the policy and every image have been verified: one
/// failed check and nothing starts.
/// </summary>
public sealed class ApplianceRuntime : IDisposable
{
    private readonly NetworkSwitchboard _switchboard;
    private readonly Lock _lock = new();
    private bool _disposed;

    private ApplianceRuntime(ValidatedPolicy policy, IReadOnlyList<ApplianceVm> vms, NetworkSwitchboard switchboard)
    {
        Policy = policy;
        Vms = vms;
        _switchboard = switchboard;
    }

    public ValidatedPolicy Policy { get; }

    public IReadOnlyList<ApplianceVm> Vms { get; }

    /// <summary>
    /// Verifies every VM's image (signer, name, sealing, rollback), checks that no audit log would be
    /// overwritten, then builds every VM. Progress goes to <paramref name="progress"/>. Any failure
    /// throws <see cref="ApplianceException"/> listing every problem found, and nothing is left running.
    /// </summary>
    public static ApplianceRuntime Prepare(ValidatedPolicy policy, IAuditSigner? signer, TextWriter progress)
    {
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(progress);
        RollbackState rollback;
        try
        {
            rollback = RollbackState.Load(policy.RollbackStateFile);
        }
        catch (ImageException e)
        {
            throw new ApplianceException($"rollback state {policy.RollbackStateFile} (rollbackStateFile): {e.Message}");
        }

        var problems = new List<string>();
        var images = new Dictionary<string, VerifiedImage>(StringComparer.Ordinal);
        int n = 0;
        foreach (var vm in policy.Vms)
        {
            n++;
            progress.WriteLine($"[{n}/{policy.Vms.Length}] verifying image for VM {vm.Name}: {vm.Image.Path}");
            try
            {
                var started = System.Diagnostics.Stopwatch.StartNew();
                var image = ImageLoader.LoadVerified(vm, rollback);
                images[vm.Name] = image;
                progress.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"      ok: '{image.Name}' version {image.Version}, {image.Manifest.TotalPayloadBytes:N0} bytes, signed by {image.SignerKeyId}, sha256 {image.ManifestSha256} ({started.Elapsed.TotalMilliseconds:F0} ms)"));
            }
            catch (ImageException e)
            {
                problems.Add($"VM {vm.Name}: {e.Message}");
                progress.WriteLine($"      FAILED: {e.Message}");
            }
            if (vm.Storage.Length > 0)
            {
                problems.Add($"VM {vm.Name}: vms[{vm.Name}].storage names {vm.Storage.Length} storage device(s), but this release has no block device to give it; remove the storage entries");
            }
            if (File.Exists(vm.Audit.Path))
            {
                problems.Add($"VM {vm.Name}: audit log {vm.Audit.Path} already exists; an audit log is never overwritten or appended to by a new run (move it away first)");
            }
        }
        if (problems.Count > 0)
        {
            throw new ApplianceException($"not starting anything: {problems.Count} problem{(problems.Count == 1 ? "" : "s")}:" +
                Environment.NewLine + string.Join(Environment.NewLine, problems.Select(p => "  " + p)));
        }

        var switchboard = new NetworkSwitchboard();
        var vms = new List<ApplianceVm>();
        try
        {
            foreach (var vm in policy.Vms)
            {
                vms.Add(ApplianceVm.Create(policy, vm, images[vm.Name], signer, switchboard));
                progress.WriteLine($"built VM {vm.Name} ({vm.Label}): {vm.MemoryMiB} MiB, network {vm.Network.Name} ({vm.Network.Backend.Describe()}), audit log {vm.Audit.Path}");
            }
            foreach (var vm in vms)
            {
                rollback.RecordBoot(vm.VmName, vm.Image, DateTimeOffset.UtcNow);
            }
        }
        catch (Exception e) when (e is ApplianceException or ImageException or IOException or UnauthorizedAccessException)
        {
            foreach (var vm in vms)
            {
                vm.Dispose();
            }
            switchboard.Dispose();
            throw e as ApplianceException ?? new ApplianceException(e.Message, e);
        }
        return new ApplianceRuntime(policy, vms, switchboard);
    }

    /// <summary>Starts every VM (concurrently: each has its own thread).</summary>
    public void StartAll()
    {
        foreach (var vm in Vms)
        {
            vm.Start();
        }
    }

    /// <summary>The VM named <paramref name="name"/>, or null.</summary>
    public ApplianceVm? Find(string name) => Vms.FirstOrDefault(v => v.VmName == name);

    /// <summary>Asks one VM to stop and completes its audit log (waits for it).</summary>
    public int Stop(ApplianceVm vm)
    {
        ArgumentNullException.ThrowIfNull(vm);
        vm.RequestStop();
        return vm.Finish();
    }

    /// <summary>Asks every VM to stop at once, then completes every audit log.</summary>
    public void StopAll()
    {
        foreach (var vm in Vms)
        {
            vm.RequestStop();
        }
        foreach (var vm in Vms)
        {
            vm.Finish();
        }
    }

    /// <summary>True when no VM is running any more.</summary>
    public bool AllEnded => Vms.All(v => v.HasEnded);

    /// <summary>Waits until every VM has ended by itself or <paramref name="cancel"/> fires.</summary>
    public void WaitUntilAllEnded(CancellationToken cancel)
    {
        while (!cancel.IsCancellationRequested && !AllEnded)
        {
            cancel.WaitHandle.WaitOne(100);
        }
    }

    /// <summary>
    /// The appliance's exit status once every VM is finished: 4 if any audit log failed (fail secure),
    /// else 0 when every VM powered off or was stopped by the operator, else the first VM's
    /// non-zero status in policy order.
    /// </summary>
    public int FinishAll()
    {
        var statuses = Vms.Select(v => v.Finish()).ToList();
        if (statuses.Contains(Boot.BootCommand.ExitAuditFailure))
        {
            return Boot.BootCommand.ExitAuditFailure;
        }
        return statuses.FirstOrDefault(s => s != 0);
    }

    public IReadOnlyList<VmStatus> ReadStatus() => [.. Vms.Select(v => v.ReadStatus())];

    /// <summary>The `status` report: one line per VM, plain text.</summary>
    public string StatusReport()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"appliance \"{Policy.ApplianceName}\", policy sha256 {Policy.Sha256}").AppendLine();
        sb.AppendLine(FormatStatusHeader());
        foreach (var s in ReadStatus())
        {
            sb.AppendLine(FormatStatus(s));
        }
        return sb.ToString();
    }

    public static string FormatStatusHeader() =>
        string.Create(CultureInfo.InvariantCulture, $"{"VM",-16} {"LABEL",-24} {"STATE",-8} {"INSTRUCTIONS",16} {"EXITS",12} {"VTIME s",9} {"AUDIT REC",10} {"NETWORK",-14} {"OUT",8} {"IN",8} {"DROP OUT",8} {"DROP IN",8}");

    public static string FormatStatus(VmStatus s) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{s.Name,-16} {s.Label.ToString(),-24} {s.State.ToString().ToLowerInvariant(),-8} {s.Instructions,16:N0} {s.Exits,12:N0} {s.VirtualSeconds,9:F1} {s.AuditRecords,10:N0} {s.Network,-14} {s.FramesOut,8:N0} {s.FramesIn,8:N0} {s.DroppedOut,8:N0} {s.DroppedIn,8:N0}")
        + (s.State == Terminal.PaneState.Stopped && s.Detail.Length > 0 ? "  (" + s.Detail + ")" : "");

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
        }
        foreach (var vm in Vms)
        {
            vm.Dispose();
        }
        _switchboard.Dispose();
    }
}
