using System.CommandLine;
using System.Reflection;

namespace SecureVmm.Appliance;

/// <summary>
/// The `securevmm` command line. Each command is added here only when it exists, so that
/// `--help` tells the truth. Exit statuses follow the contract in DESIGN.md:
/// 0 normal, 2 usage or input error, 3 triple fault, 4 audit failure, (V&lt;&lt;1)|1 debug exit.
/// </summary>
public static class Cli
{
    public const int ExitOk = 0;
    public const int ExitUsage = 2;

    public static RootCommand Build()
    {
        var root = new RootCommand(
            "SecureVmm: a secure-isolation appliance that runs policy-defined, signed VMs side by side " +
            "on a software x86 CPU, each bound to its own network, with a tamper-evident audit log.");
        root.Subcommands.Add(Boot.BootCommand.Build());
        root.Subcommands.Add(Guests.GuestCommand.Build());
        // The built-in --version reads the entry assembly; print this product's version instead.
        root.Options.OfType<VersionOption>().Single().Action = new PrintVersion();
        root.Subcommands.Add(Audit.AuditCommands.Build());
        Policy.PolicyCommands.AddTo(root);
        SecureVmm.Appliance.Run.RunCommand.AddTo(root);
        root.Subcommands.Add(Demo.DemoCommand.Build());
        return root;
    }

    private sealed class PrintVersion : System.CommandLine.Invocation.SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine(Version);
            return ExitOk;
        }
    }

    public static int Run(string[] args)
    {
        RootCommand root = Build();
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors)
            {
                Console.Error.WriteLine($"securevmm: {error.Message}");
            }
            Console.Error.WriteLine("Run 'securevmm --help' for usage.");
            return ExitUsage;
        }
        return parsed.Invoke();
    }

    /// <summary>The product version, as `--version` prints it.</summary>
    public static string Version =>
        typeof(Cli).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(Cli).Assembly.GetName().Version?.ToString() ?? "unknown";
}
