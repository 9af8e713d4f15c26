using SecureVmm.Appliance;
using Xunit;

namespace SecureVmm.Tests.Skeleton;

public class CliTests
{
    private static (int Status, string Out, string Err) Run(params string[] args)
    {
        var oldOut = Console.Out;
        var oldErr = Console.Error;
        using var o = new StringWriter();
        using var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int status = Cli.Run(args);
            return (status, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Fact]
    public void HelpListsExactlyTheCommandsThatExist()
    {
        var (status, stdout, _) = Run("--help");
        Assert.Equal(0, status);
        Assert.Contains("SecureVmm", stdout, StringComparison.Ordinal);
        foreach (var command in Cli.Build().Subcommands)
        {
            Assert.Contains(command.Name, stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void VersionPrintsTheAssemblyVersion()
    {
        var (status, stdout, _) = Run("--version");
        Assert.Equal(0, status);
        Assert.StartsWith("0.1.0", stdout.Trim(), StringComparison.Ordinal);
    }

    [Fact]
    public void UnknownCommandIsAUsageError()
    {
        var (status, _, stderr) = Run("no-such-command");
        Assert.Equal(Cli.ExitUsage, status);
        Assert.Contains("no-such-command", stderr, StringComparison.Ordinal);
    }
}
