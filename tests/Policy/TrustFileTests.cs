using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Tests.Policy;

public class TrustFileTests
{
    [Fact]
    public void TrustFileHoldsSeveralKeysAndAnyMaySignThePolicy()
    {
        using var dir = new TempDirectory();
        var first = Ed25519SecretKey.Generate();
        var second = Ed25519SecretKey.Generate();
        File.WriteAllText(dir.File("admins.trust"), KeyFiles.FormatPublic(first.PublicKey) + "\n" + KeyFiles.FormatPublic(second.PublicKey));
        var keys = KeyFiles.ReadTrustFile(dir.File("admins.trust"));
        Assert.Equal([first.Id, second.Id], keys.Select(k => k.Id));

        string policyPath = dir.File("policy.json");
        File.Copy(PolicyFixture.ExamplePath("lab-udp-pcap.json"), policyPath);
        File.WriteAllText(PolicySignature.DefaultPath(policyPath), PolicySignature.Create(File.ReadAllBytes(policyPath), second));
        Assert.Equal(second.Id, PolicyLoader.LoadVerified(policyPath, keys).AdminKeyId);
        var e = Assert.Throws<PolicyException>(() => PolicyLoader.LoadVerified(policyPath, [first.PublicKey]));
        Assert.Equal(PolicyErrorCode.WrongKey, e.Code);
    }

    [Theory]
    [InlineData("", "no public keys")]
    [InlineData("hello\n", "line 1")]
    [InlineData("SecureVmm Ed25519 public key v1\npublic: AAAA\n", "must be 32 bytes")]
    public void MalformedTrustFilesNameTheProblem(string text, string expected)
    {
        var e = Assert.Throws<KeyFileException>(() => KeyFiles.ParseTrustFile(text, "admins.trust"));
        Assert.Contains("admins.trust", e.Message, StringComparison.Ordinal);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DuplicateKeyInTrustFileIsRefused()
    {
        string block = KeyFiles.FormatPublic(Ed25519SecretKey.Generate().PublicKey);
        var e = Assert.Throws<KeyFileException>(() => KeyFiles.ParseTrustFile(block + block, "admins.trust"));
        Assert.Contains("listed twice", e.Message, StringComparison.Ordinal);
    }
}
