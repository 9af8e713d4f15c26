using SecureVmm.Policy.Images;
using Xunit;

namespace SecureVmm.Tests.Images;

public class RollbackStateTests
{
    [Fact]
    public void OlderVersionIsRefusedAfterANewerOneBooted()
    {
        using var f = new ImageFixture();
        string statePath = f.Path("state/rollback.json");
        var state = RollbackState.Load(statePath);
        Assert.Null(state.HighestBooted("desk"));

        var v5 = ImageLoader.LoadVerified(f.Signed("v5.svmi", version: 5), [f.Key.PublicKey], "desk", state);
        state.RecordBoot("desk", v5, DateTimeOffset.UtcNow);
        Assert.True(File.Exists(statePath));

        // A fresh load of the state file (as after a reboot of the appliance) remembers version 5.
        var reloaded = RollbackState.Load(statePath);
        Assert.Equal(5UL, reloaded.HighestBooted("desk"));
        string v4 = f.Signed("v4.svmi", version: 4);
        var e = Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(v4, [f.Key.PublicKey], "desk", reloaded));
        Assert.Equal(ImageErrorCode.Rollback, e.Code);
        Assert.Contains("version 4 is older than version 5", e.Message, StringComparison.Ordinal);

        // Same version again is fine; the policy may allow rollback explicitly; other VMs are independent.
        ImageLoader.LoadVerified(f.Signed("v5b.svmi", version: 5), [f.Key.PublicKey], "desk", reloaded);
        ImageLoader.LoadVerified(v4, [f.Key.PublicKey], "desk", reloaded, allowRollback: true);
        ImageLoader.LoadVerified(v4, [f.Key.PublicKey], "other-vm", reloaded);

        // Booting an allowed older version never lowers the recorded highest version.
        reloaded.RecordBoot("desk", ImageLoader.LoadVerified(v4, [f.Key.PublicKey], "desk", reloaded, allowRollback: true), DateTimeOffset.UtcNow);
        Assert.Equal(5UL, RollbackState.Load(statePath).HighestBooted("desk"));
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(statePath)!, "*.tmp"));
    }

    [Theory]
    [InlineData("{")]
    [InlineData("{\"formatVersion\":1,\"vms\":{\"desk\":{\"highestVersion\":-1}}}")]
    [InlineData("{\"formatVersion\":2,\"vms\":{}}")]
    [InlineData("{\"formatVersion\":1,\"vms\":{\"desk\":{}}}")]
    [InlineData("{\"formatVersion\":1,\"vms\":{\"desk\":{\"highestVersion\":1}},\"vms\":{}}")]
    public void MalformedStateIsAnErrorNotAReset(string json)
    {
        using var f = new ImageFixture();
        string statePath = f.Path("rollback.json");
        File.WriteAllText(statePath, json);
        var e = Assert.Throws<ImageException>(() => RollbackState.Load(statePath));
        Assert.Equal(ImageErrorCode.MalformedRollbackState, e.Code);
        Assert.Contains("rollback.json", e.Message, StringComparison.Ordinal);
    }
}
