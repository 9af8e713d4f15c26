using SecureVmm.Appliance;
using SecureVmm.Policy.Keys;
using Xunit;

namespace SecureVmm.Tests.Policy;

/// <summary>The commands as a user runs them: exit statuses and messages, never a stack trace.</summary>
[Collection("PolicyConsole")]
public class PolicyCliTests
{
    internal static (int Status, string Out, string Err) Run(params string[] args) => Support.CliRunner.Run(args);

    private static void AssertNoStackTrace(string text) =>
        Assert.DoesNotContain("   at ", text, StringComparison.Ordinal);

    [Fact]
    public void CheckPrintsSummaryTable()
    {
        var (status, stdout, stderr) = Run("policy", "check", PolicyFixture.ExamplePath("nettop-two-desktops.json"));
        Assert.True(status == 0, stderr);
        foreach (var expected in new[] { "secret-desktop", "SECRET/red", "1024 MiB", "secret-release", "secret-net", "tap svmm-sec0", "public-desktop" })
        {
            Assert.Contains(expected, stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void CheckPrintsEveryProblemAndExits2()
    {
        using var dir = new TempDirectory();
        var doc = PolicyFixture.TwoDesktops();
        doc.Networks![1]!.Mac = doc.Networks[0]!.Mac;
        doc.Vms![0]!.Devices!.Add("floppy");
        string path = dir.File("bad.json");
        File.WriteAllBytes(path, PolicyFixture.Serialize(doc));
        var (status, _, stderr) = Run("policy", "check", path);
        Assert.Equal(2, status);
        Assert.Contains("2 problems", stderr, StringComparison.Ordinal);
        Assert.Contains("$.networks[1].mac", stderr, StringComparison.Ordinal);
        Assert.Contains("$.vms[0].devices[5]", stderr, StringComparison.Ordinal);
        AssertNoStackTrace(stderr);
    }

    [Fact]
    public void KeygenSignCheckRoundTripAndWrongKey()
    {
        using var dir = new TempDirectory();
        string policy = dir.File("policy.json");
        File.Copy(PolicyFixture.ExamplePath("lab-udp-pcap.json"), policy);
        Assert.Equal(0, Run("keygen", "--out", dir.File("admin")).Status);
        Assert.Equal(0, Run("keygen", "--out", dir.File("other")).Status);
        var (refuse, _, refuseErr) = Run("keygen", "--out", dir.File("admin"));
        Assert.Equal(2, refuse);
        Assert.Contains("already exists", refuseErr, StringComparison.Ordinal);

        var (signStatus, signOut, signErr) = Run("policy", "sign", policy, "--key", dir.File("admin.key"));
        Assert.True(signStatus == 0, signErr);
        Assert.Contains(KeyFiles.ReadPublic(dir.File("admin.pub")).Id, signOut, StringComparison.Ordinal);
        Assert.Equal(0, Run("policy", "check", policy, "--policy-key", dir.File("admin.pub")).Status);

        var (wrong, _, wrongErr) = Run("policy", "check", policy, "--policy-key", dir.File("other.pub"));
        Assert.Equal(2, wrong);
        Assert.Contains("wrong key", wrongErr, StringComparison.Ordinal);
        AssertNoStackTrace(wrongErr);
    }

    [Fact]
    public void SignRefusesAnInvalidPolicy()
    {
        using var dir = new TempDirectory();
        string policy = dir.File("policy.json");
        File.WriteAllText(policy, "{\"formatVersion\": 1}");
        Run("keygen", "--out", dir.File("admin"));
        var (status, _, stderr) = Run("policy", "sign", policy, "--key", dir.File("admin.key"));
        Assert.Equal(2, status);
        Assert.Contains("not signing", stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(policy + ".sig"));
    }

    [Theory]
    [InlineData("policy", "check", "/nonexistent/policy.json")]
    [InlineData("policy", "sign", "/nonexistent/policy.json", "--key", "/nonexistent/k.key")]
    [InlineData("image", "verify", "/nonexistent/x.svmi", "--key", "/nonexistent/k.pub")]
    [InlineData("image", "sign", "/nonexistent/x.svmi", "--key", "/nonexistent/k.key")]
    [InlineData("image", "pack", "--out", "/nonexistent/x.svmi", "--name", "x", "--image-version", "1", "--kind", "flat", "--kernel", "/nonexistent/k")]
    public void MissingFilesExit2WithoutStackTrace(params string[] args)
    {
        var (status, _, stderr) = Run(args);
        Assert.Equal(2, status);
        Assert.Contains("/nonexistent/", stderr, StringComparison.Ordinal);
        AssertNoStackTrace(stderr);
    }
}
