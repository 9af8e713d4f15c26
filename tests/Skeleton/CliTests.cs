using SecureVmm.Appliance;
using Xunit;

namespace SecureVmm.Tests.Skeleton;

[Collection("PolicyConsole")]
public class CliTests
{
    private static (int Status, string Out, string Err) Run(params string[] args) => Support.CliRunner.Run(args);

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
