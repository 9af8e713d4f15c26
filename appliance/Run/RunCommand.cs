using System.CommandLine;
using System.Runtime.InteropServices;
using SecureVmm.Appliance.Audit;
using SecureVmm.Appliance.Policy;
using SecureVmm.Appliance.Runtime;
using SecureVmm.Appliance.Terminal;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using SecureVmm.Tcb.Audit;

namespace SecureVmm.Appliance.Run;

/// <summary>How `run` shows the VMs.</summary>
public enum ConsoleMode
{
    /// <summary>The live console when standard output is a terminal, else lines.</summary>
    Auto,
    /// <summary>The live console (labelled panes, keyboard focus).</summary>
    Terminal,
    /// <summary>Each VM's serial lines, prefixed by the VM's label (scripts, logs).</summary>
    Lines,
    /// <summary>Nothing but the appliance's own messages.</summary>
    None,
}

/// <summary>`securevmm run`, `status` and `stop`: the operator's commands.</summary>
public static class RunCommand
{
    public const string DefaultPolicyKey = "/etc/securevmm/policy-key.pub";

    public static void AddTo(RootCommand root)
    {
        root.Subcommands.Add(BuildRun());
        root.Subcommands.Add(BuildStatus());
        root.Subcommands.Add(BuildStop());
    }

    public sealed record RunOptions(string PolicyPath, string? PolicyKey, string? Signature, string? AuditKey, string? Control, double? Seconds, ConsoleMode Console);

    private static Command BuildRun()
    {
        var policy = new Argument<string>("POLICY") { Description = "The signed appliance policy (JSON, docs/policy.md); its signature is POLICY.sig" };
        var key = new Option<string?>("--policy-key") { HelpName = "FILE", Description = $"Administrator public key or trust file that must have signed the policy (default {DefaultPolicyKey})" };
        var signature = new Option<string?>("--signature") { HelpName = "FILE", Description = "Policy signature file (default POLICY.sig)" };
        var auditKey = new Option<string?>("--audit-key") { HelpName = "FILE", Description = "Secret key that signs the audit logs' checkpoints" };
        var control = new Option<string?>("--control") { HelpName = "PATH", Description = "Control socket for `status` and `stop` (default $XDG_RUNTIME_DIR/securevmm/control.sock, /run/securevmm/control.sock for root)" };
        var seconds = new Option<double?>("--seconds") { Description = "Stop every VM after this many seconds (default: run until every VM ends, Ctrl-C or `securevmm stop`)" };
        var console = new Option<ConsoleMode>("--console") { Description = "Auto (live console on a terminal, else lines), Terminal, Lines (serial lines prefixed by label) or None", DefaultValueFactory = _ => ConsoleMode.Auto };
        var command = new Command("run", "Verify a signed policy and every image it names, then run all its VMs side by side. " +
            "Exit status: 0 all VMs powered off or stopped, 2 bad policy/image/key, 4 audit failure, else the first failing VM's status.")
        {
            policy, key, signature, auditKey, control, seconds, console,
        };
        command.SetAction(parse => Run(new RunOptions(parse.GetValue(policy)!, parse.GetValue(key), parse.GetValue(signature),
            parse.GetValue(auditKey), parse.GetValue(control), parse.GetValue(seconds), parse.GetValue(console))));
        return command;
    }

    private static Command BuildStatus()
    {
        var control = new Option<string?>("--control") { HelpName = "PATH", Description = "The running appliance's control socket (default as for `run`)" };
        var command = new Command("status", "Show each running VM: state, instructions, exits, audit log position, network counters") { control };
        command.SetAction(parse => Send(parse.GetValue(control), "status"));
        return command;
    }

    private static Command BuildStop()
    {
        var vm = new Argument<string?>("VM") { Description = "The VM to stop (default: every VM, and the appliance ends)", Arity = ArgumentArity.ZeroOrOne };
        var control = new Option<string?>("--control") { HelpName = "PATH", Description = "The running appliance's control socket (default as for `run`)" };
        var command = new Command("stop", "Stop one VM, or all of them, cleanly: each audit log is completed and closed") { vm, control };
        command.SetAction(parse => Send(parse.GetValue(control), parse.GetValue(vm) is { } name ? "stop " + name : "stop"));
        return command;
    }

    private static int Send(string? control, string request)
    {
        string path = control ?? ControlServer.DefaultPath();
        if (!ControlClient.TrySend(path, request, out string reply))
        {
            Console.Error.WriteLine($"securevmm: no appliance answers at {path}: {reply}");
            return Cli.ExitUsage;
        }
        bool ok = reply.StartsWith("ok", StringComparison.Ordinal);
        (ok ? Console.Out : Console.Error).Write(ok ? reply[(reply.IndexOf('\n') + 1)..] : "securevmm: " + reply);
        return ok ? Cli.ExitOk : Cli.ExitUsage;
    }

    public static int Run(RunOptions options) => CommandBoundary.Run(() =>
    {
        var log = Console.Error;
        string keyPath = options.PolicyKey ?? DefaultPolicyKey;
        if (options.PolicyKey is null && !File.Exists(keyPath))
        {
            log.WriteLine($"securevmm run: no administrator key: pass --policy-key FILE (the policy must be signed; {DefaultPolicyKey} does not exist)");
            return Cli.ExitUsage;
        }
        var adminKeys = KeyFiles.ReadTrustFile(keyPath);
        ValidatedPolicy policy = PolicyLoader.LoadVerified(options.PolicyPath, [.. adminKeys], options.Signature);
        log.WriteLine($"policy {policy.SourcePath}: signature OK (administrator key {policy.AdminKeyId}), sha256 {policy.Sha256}, {policy.Vms.Length} VMs");
        IAuditSigner? signer = options.AuditKey is null ? null : new Ed25519AuditSigner(KeyFiles.ReadSecret(options.AuditKey));

        ApplianceRuntime runtime;
        try
        {
            runtime = ApplianceRuntime.Prepare(policy, signer, log);
        }
        catch (ApplianceException e)
        {
            log.WriteLine($"securevmm run: {e.Message}");
            return Cli.ExitUsage;
        }
        using (runtime)
        {
            return RunPrepared(runtime, options, log);
        }
    });

    /// <summary>Starts a prepared appliance, shows it, stops it cleanly and prints the summary. Returns the exit status.</summary>
    public static int RunPrepared(ApplianceRuntime runtime, RunOptions options, TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(options);
        using var stopAll = new CancellationTokenSource();
        ControlServer? control = null;
        try
        {
            control = ControlServer.Start(options.Control ?? ControlServer.DefaultPath(), request => Control(runtime, request, stopAll));
        }
        catch (Exception e) when (e is ApplianceException or IOException or UnauthorizedAccessException)
        {
            log.WriteLine($"securevmm run: {e.Message}");
            return Cli.ExitUsage;
        }
        using (control)
        {
            using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stopAll.Cancel(); });
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stopAll.Cancel(); });
            if (options.Seconds is double seconds)
            {
                stopAll.CancelAfter(TimeSpan.FromSeconds(seconds));
            }
            ConsoleMode mode = options.Console == ConsoleMode.Auto
                ? (Console.IsOutputRedirected || Console.IsInputRedirected ? ConsoleMode.Lines : ConsoleMode.Terminal)
                : options.Console;
            using LineLog? lines = mode == ConsoleMode.Lines ? LineLog.Attach(runtime.Vms, Console.Out) : null;
            try
            {
                runtime.StartAll();
            }
            catch (ApplianceException e)
            {
                // A log that cannot take VmStart: fail secure, stop what started, keep what was written.
                log.WriteLine($"securevmm run: {e.Message}");
                runtime.StopAll();
                runtime.FinishAll();
                return Boot.BootCommand.ExitAuditFailure;
            }
            log.WriteLine($"running {runtime.Vms.Count} VMs; control socket {control.Path}" + (options.Seconds is double s ? $"; stopping after {s:0.#} s" : "; Ctrl-C stops everything"));
            if (mode == ConsoleMode.Terminal)
            {
                ShowTerminal(runtime, stopAll);
            }
            else
            {
                runtime.WaitUntilAllEnded(stopAll.Token);
            }
            runtime.StopAll();
            int status = runtime.FinishAll();
            log.WriteLine("summary:");
            log.WriteLine("  " + ApplianceRuntime.FormatStatusHeader());
            foreach (var vm in runtime.Vms)
            {
                log.WriteLine("  " + ApplianceRuntime.FormatStatus(vm.ReadStatus()) + $"  exit status {vm.ExitStatus}");
                if (vm.AuditProblem is { } problem)
                {
                    log.WriteLine($"  {vm.VmName}: AUDIT FAILURE (fail secure): {problem}");
                }
                log.WriteLine($"  {vm.VmName}: audit log {vm.AuditPath}");
            }
            return status;
        }
    }

    private static void ShowTerminal(ApplianceRuntime runtime, CancellationTokenSource stopAll)
    {
        // The live console: each VM in a pane framed by its label, keys to the focused VM only.
        // It returns once every VM has stopped after Ctrl-A x / Ctrl-C, or when stopAll fires
        // (--seconds, `securevmm stop`, a signal); the caller then finishes every VM.
        var controls = new ConsoleControls(
            // Stopping one VM completes and closes its audit log at once, off the console's thread.
            pane => ThreadPool.QueueUserWorkItem(_ => runtime.Stop((ApplianceVm)pane)),
            () =>
            {
                foreach (var vm in runtime.Vms)
                {
                    vm.RequestStop();
                }
            },
            runtime.StatusReport);
        ConsoleView.Run(runtime.Vms, controls, stopAll.Token);
    }

    /// <summary>Answers one control request (docs/cli.md, "Control socket").</summary>
    private static string Control(ApplianceRuntime runtime, string request, CancellationTokenSource stopAll)
    {
        if (request == "status")
        {
            return "ok\n" + runtime.StatusReport();
        }
        if (request == "stop")
        {
            stopAll.Cancel();
            return "ok\nstopping every VM\n";
        }
        if (request.StartsWith("stop ", StringComparison.Ordinal))
        {
            string name = request[5..].Trim();
            var vm = runtime.Find(name) ?? throw new ApplianceException($"no VM named '{name}' (VMs: {string.Join(", ", runtime.Vms.Select(v => v.VmName))})");
            int status = runtime.Stop(vm);
            return $"ok\nstopped {name} (exit status {status}); audit log {vm.AuditPath} closed\n";
        }
        throw new ApplianceException($"unknown request '{request}' (expected status, stop or stop NAME)");
    }
}
