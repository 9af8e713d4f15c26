using SecureVmm.Policy.Keys;
using Xunit;

namespace SecureVmm.Tests.Keys;

public class Ed25519KeysTests
{
    [Fact]
    public void Rfc8032TestVector1()
    {
        // RFC 8032, section 7.1, TEST 1 (empty message).
        var key = new Ed25519SecretKey(Convert.FromHexString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
        Assert.Equal("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", Convert.ToHexStringLower(key.PublicKey.Bytes));
        byte[] sig = key.Sign([]);
        Assert.Equal("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b", Convert.ToHexStringLower(sig));
        Assert.True(key.PublicKey.Verify([], sig));
    }

    [Fact]
    public void TamperedMessageOrSignatureFails()
    {
        var key = Ed25519SecretKey.Generate();
        byte[] msg = "policy"u8.ToArray();
        byte[] sig = key.Sign(msg);
        Assert.True(key.PublicKey.Verify(msg, sig));
        Assert.False(key.PublicKey.Verify("policx"u8, sig));
        sig[10] ^= 1;
        Assert.False(key.PublicKey.Verify(msg, sig));
        Assert.False(Ed25519SecretKey.Generate().PublicKey.Verify(msg, key.Sign(msg)));
    }

    [Fact]
    public void KeyFilesRoundTripAndRejectMismatchedIds()
    {
        string dir = Directory.CreateTempSubdirectory("svmm-keys").FullName;
        try
        {
            var key = Ed25519SecretKey.Generate();
            KeyFiles.WriteSecret(Path.Combine(dir, "k.sec"), key);
            KeyFiles.WritePublic(Path.Combine(dir, "k.pub"), key.PublicKey);
            Assert.Equal(key.Id, KeyFiles.ReadSecret(Path.Combine(dir, "k.sec")).Id);
            Assert.Equal(key.Id, KeyFiles.ReadPublic(Path.Combine(dir, "k.pub")).Id);
            string forged = KeyFiles.FormatPublic(key.PublicKey).Replace(key.Id, "0000000000000000", StringComparison.Ordinal);
            var e = Assert.Throws<KeyFileException>(() => KeyFiles.ParsePublic(forged, "forged.pub"));
            Assert.Contains("forged.pub", e.Message, StringComparison.Ordinal);
            Assert.Throws<KeyFileException>(() => KeyFiles.ReadPublic(Path.Combine(dir, "k.sec")));
            Assert.Throws<KeyFileException>(() => KeyFiles.ReadPublic(Path.Combine(dir, "missing.pub")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
