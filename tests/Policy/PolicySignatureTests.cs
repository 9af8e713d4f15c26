using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Tests.Policy;

public class PolicySignatureTests
{
    private static (TempDirectory Dir, string PolicyPath, Ed25519SecretKey Admin) SignedExample()
    {
        var dir = new TempDirectory();
        string policyPath = dir.File("policy.json");
        File.Copy(PolicyFixture.ExamplePath("nettop-two-desktops.json"), policyPath);
        var admin = Ed25519SecretKey.Generate();
        File.WriteAllText(PolicySignature.DefaultPath(policyPath), PolicySignature.Create(File.ReadAllBytes(policyPath), admin));
        return (dir, policyPath, admin);
    }

    [Fact]
    public void SignedPolicyLoadsAndRecordsDigestAndAdminKey()
    {
        var (dir, policyPath, admin) = SignedExample();
        using (dir)
        {
            var policy = PolicyLoader.LoadVerified(policyPath, admin.PublicKey);
            Assert.Equal(admin.Id, policy.AdminKeyId);
            Assert.Equal(PolicySignature.Sha256Hex(File.ReadAllBytes(policyPath)), policy.Sha256);
            Assert.Equal(["secret-desktop", "public-desktop"], policy.Vms.Select(v => v.Name));
        }
    }

    [Fact]
    public void WrongAdministratorKeyIsRefused()
    {
        var (dir, policyPath, _) = SignedExample();
        using (dir)
        {
            var e = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(policyPath, Ed25519SecretKey.Generate().PublicKey));
            Assert.Equal(PolicyErrorCode.WrongKey, e.Code);
            Assert.Contains("policy.json.sig", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void EditedPolicyIsRefused()
    {
        var (dir, policyPath, admin) = SignedExample();
        using (dir)
        {
            File.WriteAllText(policyPath, File.ReadAllText(policyPath).Replace("\"memoryMiB\": 1024", "\"memoryMiB\": 1025", StringComparison.Ordinal));
            var e = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(policyPath, admin.PublicKey));
            Assert.Equal(PolicyErrorCode.DigestMismatch, e.Code);
            Assert.Contains("changed since it was signed", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void ForgedSignatureWithMatchingDigestIsRefused()
    {
        var (dir, policyPath, admin) = SignedExample();
        using (dir)
        {
            // An attacker edits the policy and updates the digest line, but cannot make the signature.
            File.WriteAllText(policyPath, File.ReadAllText(policyPath) + " ");
            string sigPath = PolicySignature.DefaultPath(policyPath);
            string[] lines = File.ReadAllLines(sigPath);
            lines[2] = "sha256: " + PolicySignature.Sha256Hex(File.ReadAllBytes(policyPath));
            File.WriteAllLines(sigPath, lines);
            var e = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(policyPath, admin.PublicKey));
            Assert.Equal(PolicyErrorCode.BadSignature, e.Code);
        }
    }

    [Theory]
    [InlineData("garbage", "line 1")]
    [InlineData("SecureVmm policy signature v1\nkey: abc\n", "missing field 'sha256'")]
    [InlineData("SecureVmm policy signature v1\nkey: a\nsha256: b\nsignature: !!!\n", "not base64")]
    [InlineData("SecureVmm policy signature v1\nkey: a\nsha256: b\nsignature: AAAA\n", "must be 64 bytes")]
    [InlineData("SecureVmm policy signature v1\nkey: a\nkey: b\n", "line 3")]
    public void MalformedSignatureFilesAreRefused(string text, string expected)
    {
        var (dir, policyPath, admin) = SignedExample();
        using (dir)
        {
            File.WriteAllText(PolicySignature.DefaultPath(policyPath), text);
            var e = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(policyPath, admin.PublicKey));
            Assert.Equal(PolicyErrorCode.MalformedSignature, e.Code);
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void MissingPolicyAndMissingSignatureHaveTheirOwnErrors()
    {
        var (dir, policyPath, admin) = SignedExample();
        using (dir)
        {
            var missing = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(dir.File("nope.json"), admin.PublicKey));
            Assert.Equal(PolicyErrorCode.MissingFile, missing.Code);
            Assert.Contains("nope.json", missing.Message, StringComparison.Ordinal);
            File.Delete(PolicySignature.DefaultPath(policyPath));
            var unsigned = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(policyPath, admin.PublicKey));
            Assert.Equal(PolicyErrorCode.MissingSignature, unsigned.Code);
        }
    }

    [Fact]
    public void SignedButInvalidPolicyStillFailsValidation()
    {
        using var dir = new TempDirectory();
        string policyPath = dir.File("policy.json");
        var doc = PolicyFixture.TwoDesktops();
        doc.Vms![1]!.Network = "secret-net";
        File.WriteAllBytes(policyPath, PolicyFixture.Serialize(doc));
        var admin = Ed25519SecretKey.Generate();
        File.WriteAllText(PolicySignature.DefaultPath(policyPath), PolicySignature.Create(File.ReadAllBytes(policyPath), admin));
        var e = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(policyPath, admin.PublicKey));
        Assert.Equal(PolicyErrorCode.Invalid, e.Code);
        Assert.Contains(e.Problems, p => p.Rule == PolicyRule.NetworkSharedByVms);
    }
}
