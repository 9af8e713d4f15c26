using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using SecureVmm.Tests.Policy;
using Xunit;

namespace SecureVmm.Tests.Images;

[Collection("PolicyConsole")]
public class ImageCliTests
{
    [Fact]
    public void PackSignVerifyPrintsSignerAndDigests()
    {
        using var f = new ImageFixture();
        string image = f.Path("kiosk.svmi");
        Assert.Equal(0, PolicyCliTests.Run("keygen", "--out", f.Path("signer")).Status);
        var (packStatus, _, packErr) = PolicyCliTests.Run("image", "pack", "--out", image, "--name", "kiosk", "--image-version", "7",
            "--kind", "flat", "--kernel", f.Kernel, "--load-address", "0x100000", "--entry", "0x100000", "--sealed");
        Assert.True(packStatus == 0, packErr);

        var (unsigned, _, unsignedErr) = PolicyCliTests.Run("image", "verify", image, "--key", f.Path("signer.pub"));
        Assert.Equal(2, unsigned);
        Assert.Contains("unsigned image", unsignedErr, StringComparison.Ordinal);

        Assert.Equal(0, PolicyCliTests.Run("image", "sign", image, "--key", f.Path("signer.key")).Status);
        var (status, stdout, stderr) = PolicyCliTests.Run("image", "verify", image, "--key", f.Path("signer.pub"));
        Assert.True(status == 0, stderr);
        string kernelSha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f.Kernel)));
        Assert.Contains(kernelSha, stdout, StringComparison.Ordinal);
        Assert.Contains("version:  7", stdout, StringComparison.Ordinal);
        Assert.Contains("sealed:   yes", stdout, StringComparison.Ordinal);
        Assert.Contains("entry 0x00100000", stdout, StringComparison.Ordinal);
        Assert.Contains("signer:   " + SecureVmm.Policy.Keys.KeyFiles.ReadPublic(f.Path("signer.pub")).Id, stdout, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("hash mismatch", "payload")]
    [InlineData("truncated payload", "truncate")]
    [InlineData("wrong key", "other-key")]
    [InlineData("bad signature", "signature")]
    [InlineData("malformed manifest JSON", "json")]
    [InlineData("not an image", "magic")]
    [InlineData("trailing data", "append")]
    public void EachImageErrorExits2WithItsOwnMessage(string expected, string damage)
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        byte[] bytes = File.ReadAllBytes(path);
        switch (damage)
        {
            case "payload":
                bytes[bytes.Length - 1000] ^= 1;
                break;
            case "truncate":
                bytes = bytes[..(bytes.Length / 2)];
                break;
            case "signature":
                bytes[^1] ^= 1;
                break;
            case "json":
                bytes[ImageBundle.HeaderSize] = (byte)'[';
                break;
            case "magic":
                bytes[0] = (byte)'X';
                break;
            case "append":
                bytes = [.. bytes, 0];
                break;
        }
        File.WriteAllBytes(path, bytes);
        string key = f.Path("trusted.pub");
        KeyFiles.WritePublic(key, damage == "other-key" ? Ed25519SecretKey.Generate().PublicKey : f.Key.PublicKey);
        var (status, _, stderr) = PolicyCliTests.Run("image", "verify", path, "--key", key);
        Assert.Equal(2, status);
        Assert.StartsWith("securevmm: " + expected + ": " + path, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void BadAddressAndAddressOnNonFlatKindAreUsageErrors()
    {
        using var f = new ImageFixture();
        var (bad, _, badErr) = PolicyCliTests.Run("image", "pack", "--out", f.Path("a.svmi"), "--name", "a", "--image-version", "1",
            "--kind", "flat", "--kernel", f.Kernel, "--load-address", "0xZZ", "--entry", "0");
        Assert.Equal(2, bad);
        Assert.Contains("--load-address", badErr, StringComparison.Ordinal);
        var (wrongKind, _, wrongErr) = PolicyCliTests.Run("image", "pack", "--out", f.Path("b.svmi"), "--name", "b", "--image-version", "1",
            "--kind", "linux", "--kernel", f.Kernel, "--entry", "0x1000");
        Assert.Equal(2, wrongKind);
        Assert.Contains("flat only", wrongErr, StringComparison.Ordinal);
    }
}
