using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using SecureVmm.Tests.Policy;
using Xunit;

namespace SecureVmm.Tests.Images;

/// <summary>What the appliance's run command will do: signed policy, then each VM's signed image, with rollback state.</summary>
[Collection("PolicyConsole")]
public class PolicyImageIntegrationTests
{
    [Fact]
    public void SignedPolicyBootsSignedImagesAndRecordsVersions()
    {
        using var f = new ImageFixture();
        var admin = Ed25519SecretKey.Generate();
        var doc = PolicyFixture.Lab();
        doc.TrustAnchors![0]!.PublicKey = Convert.ToBase64String(f.Key.PublicKey.Bytes);
        doc.TrustAnchors[0]!.KeyId = f.Key.Id;
        string policyPath = f.Path("policy.json");
        File.WriteAllBytes(policyPath, PolicyFixture.Serialize(doc));
        File.WriteAllText(PolicySignature.DefaultPath(policyPath), PolicySignature.Create(File.ReadAllBytes(policyPath), admin));

        Directory.CreateDirectory(f.Path("images"));
        ImageBundle.Pack(f.Path("images/echo.svmi"), "net-echo", 2, ImageKind.Multiboot, false, "", null, null,
            [new(PayloadRole.Kernel, f.Kernel)], DateTimeOffset.UtcNow);
        ImageBundle.Sign(f.Path("images/echo.svmi"), f.Key);
        ImageBundle.Pack(f.Path("images/kiosk.svmi"), "kiosk", 9, ImageKind.Flat, true, "", 0x100000, 0x100000,
            [new(PayloadRole.Kernel, f.Kernel)], DateTimeOffset.UtcNow);
        ImageBundle.Sign(f.Path("images/kiosk.svmi"), f.Key);

        var policy = PolicyLoader.LoadVerified(policyPath, admin.PublicKey);
        var rollback = RollbackState.Load(policy.RollbackStateFile);
        foreach (var vm in policy.Vms)
        {
            var image = ImageLoader.LoadVerified(vm, rollback);
            Assert.Equal(f.Key.Id, image.SignerKeyId);
            Assert.Equal(vm.Image.Sealed, image.Sealed);
            rollback.RecordBoot(vm.Name, image, DateTimeOffset.UtcNow);
        }
        var state = RollbackState.Load(f.Path("state/rollback-state.json"));
        Assert.Equal(2UL, state.HighestBooted("echo"));
        Assert.Equal(9UL, state.HighestBooted("kiosk"));

        // `policy check --images` does the same checks from the command line.
        var (status, stdout, stderr) = PolicyCliTests.Run("policy", "check", policyPath, "--images");
        Assert.True(status == 0, stderr);
        Assert.Contains("image for kiosk: 'kiosk' version 9", stdout, StringComparison.Ordinal);

        // Swapping the two image files is caught by the name binding even though the same key signed both.
        File.Move(f.Path("images/echo.svmi"), f.Path("images/tmp.svmi"));
        File.Move(f.Path("images/kiosk.svmi"), f.Path("images/echo.svmi"));
        var e = Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(policy.Vm("echo"), rollback));
        Assert.Equal(ImageErrorCode.NameMismatch, e.Code);

        // An older image for kiosk is refused now that version 9 has booted.
        ImageBundle.Pack(f.Path("images/kiosk.svmi"), "kiosk", 8, ImageKind.Flat, true, "", 0x100000, 0x100000,
            [new(PayloadRole.Kernel, f.Kernel)], DateTimeOffset.UtcNow);
        ImageBundle.Sign(f.Path("images/kiosk.svmi"), f.Key);
        Assert.Equal(ImageErrorCode.Rollback, Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(policy.Vm("kiosk"), state)).Code);
    }
}
