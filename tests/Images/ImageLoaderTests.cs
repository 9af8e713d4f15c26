using System.Buffers.Binary;
using System.Text;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using Xunit;

namespace SecureVmm.Tests.Images;

public class ImageLoaderTests
{
    private static ImageException Refused(string path, Ed25519PublicKey key) =>
        Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(path, [key], null, null));

    [Fact]
    public void SignedImageVerifiesAndHoldsTheExactPayloadBytes()
    {
        using var f = new ImageFixture();
        string path = f.Signed(isSealed: true);
        var image = ImageLoader.LoadVerified(path, [f.Key.PublicKey], "secret-desktop", null, "secret-desktop", expectSealed: true);
        Assert.Equal(f.Key.Id, image.SignerKeyId);
        Assert.Equal(5UL, image.Version);
        Assert.True(image.Sealed);
        Assert.Equal(File.ReadAllBytes(f.Kernel), image.Kernel.ToArray());
        Assert.Equal(File.ReadAllBytes(f.Initrd), image.Initrd!.Value.ToArray());
        Assert.Equal("console=ttyS0", image.Manifest.CommandLine);
        Assert.Equal(64, image.ManifestSha256.Length);
        // Read once: once loaded, changing the file changes nothing in memory.
        File.WriteAllBytes(path, new byte[10]);
        Assert.Equal(File.ReadAllBytes(f.Kernel), image.Kernel.ToArray());
    }

    [Fact]
    public void SecondSignatureIsAddedAndEitherKeyVerifies()
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        var second = Ed25519SecretKey.Generate();
        ImageBundle.Sign(path, second);
        ImageBundle.Sign(path, second); // re-signing replaces, not duplicates
        Assert.Equal(second.Id, ImageLoader.LoadVerified(path, [second.PublicKey], null, null).SignerKeyId);
        Assert.Equal(f.Key.Id, ImageLoader.LoadVerified(path, [f.Key.PublicKey], null, null).SignerKeyId);
        byte[] bytes = File.ReadAllBytes(path);
        long manifestLength = BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
        long payloads = new FileInfo(f.Kernel).Length + new FileInfo(f.Initrd).Length;
        Assert.Equal(ImageBundle.HeaderSize + manifestLength + payloads + ImageBundle.SignatureBlockHeaderSize + (2 * ImageBundle.SignatureEntrySize), bytes.Length);
    }

    [Fact]
    public void UntrustedExtraSignaturesAreIgnoredButABadTrustedOneIsRefused()
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        var second = Ed25519SecretKey.Generate();
        ImageBundle.Sign(path, second);
        byte[] bytes = File.ReadAllBytes(path);
        bytes[^1] ^= 1; // the last byte of the second key's signature
        File.WriteAllBytes(path, bytes);
        Assert.Equal(f.Key.Id, ImageLoader.LoadVerified(path, [f.Key.PublicKey], null, null).SignerKeyId);
        var e = Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(path, [f.Key.PublicKey, second.PublicKey], null, null));
        Assert.Equal(ImageErrorCode.BadSignature, e.Code);
        Assert.Contains(second.Id, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void UnsignedImageIsRefused()
    {
        using var f = new ImageFixture();
        string path = f.Path("u.svmi");
        ImageBundle.Pack(path, "kiosk", 1, ImageKind.Flat, true, "", 0x100000, 0x100000, [new(PayloadRole.Kernel, f.Kernel)], DateTimeOffset.UtcNow);
        Assert.Equal(ImageErrorCode.Unsigned, Refused(path, f.Key.PublicKey).Code);
    }

    [Fact]
    public void UntrustedKeyIsRefusedAsWrongKey()
    {
        using var f = new ImageFixture();
        var e = Refused(f.Signed(), Ed25519SecretKey.Generate().PublicKey);
        Assert.Equal(ImageErrorCode.WrongKey, e.Code);
        Assert.Contains(f.Key.Id, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FlippedPayloadByteIsAHashMismatch()
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        byte[] bytes = File.ReadAllBytes(path);
        bytes[^200] ^= 0x40; // inside the initrd, before the signature block
        File.WriteAllBytes(path, bytes);
        var e = Refused(path, f.Key.PublicKey);
        Assert.Equal(ImageErrorCode.HashMismatch, e.Code);
        Assert.Contains("initrd.img", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EditedManifestIsABadSignature()
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        byte[] bytes = File.ReadAllBytes(path);
        int at = IndexOf(bytes, "ttyS0"u8);
        bytes[at + 4] = (byte)'1'; // console=ttyS1: still canonical, still valid, but not what was signed
        File.WriteAllBytes(path, bytes);
        Assert.Equal(ImageErrorCode.BadSignature, Refused(path, f.Key.PublicKey).Code);
    }

    [Fact]
    public void TruncatedPayloadIsReported()
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        using (var s = File.OpenWrite(path))
        {
            s.SetLength(50_000);
        }
        var e = Refused(path, f.Key.PublicKey);
        Assert.Equal(ImageErrorCode.TruncatedPayload, e.Code);
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TrailingBytesAreRefused()
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        File.AppendAllText(path, "x");
        Assert.Equal(ImageErrorCode.TrailingData, Refused(path, f.Key.PublicKey).Code);
    }

    [Fact]
    public void NotAnImageAndMissingFile()
    {
        using var f = new ImageFixture();
        Assert.Equal(ImageErrorCode.NotAnImage, Refused(f.Kernel, f.Key.PublicKey).Code);
        var missing = Refused(f.Path("none.svmi"), f.Key.PublicKey);
        Assert.Equal(ImageErrorCode.MissingFile, missing.Code);
        Assert.Contains("none.svmi", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OversizedManifestLengthIsRefusedBeforeReading()
    {
        using var f = new ImageFixture();
        string path = f.Signed();
        byte[] bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), 10_000_000);
        File.WriteAllBytes(path, bytes);
        var e = Refused(path, f.Key.PublicKey);
        Assert.Equal(ImageErrorCode.OversizedField, e.Code);
        Assert.Contains("offset 8", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Writes a bundle around hand-made manifest JSON (no signatures), to test manifest parsing.</summary>
    private static string RawBundle(ImageFixture f, string manifestJson)
    {
        byte[] manifest = Encoding.UTF8.GetBytes(manifestJson);
        using var ms = new MemoryStream();
        ms.Write(ImageBundle.Magic);
        Span<byte> u32 = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(u32, (uint)manifest.Length);
        ms.Write(u32);
        ms.Write(new byte[4]);
        ms.Write(manifest);
        string path = f.Path("raw.svmi");
        File.WriteAllBytes(path, ms.ToArray());
        return path;
    }

    [Theory]
    [InlineData("{\"formatVersion\":1,", ImageErrorCode.MalformedJson, "malformed")]
    [InlineData("{\"formatVersion\":1,\"name\":\"a\",\"extra\":1}", ImageErrorCode.MalformedJson, "unknown field 'extra'")]
    [InlineData("{\"formatVersion\":1,\"formatVersion\":1}", ImageErrorCode.MalformedJson, "duplicate property")]
    [InlineData("{\"formatVersion\":1,\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"version\":1,\"created\":\"2026-01-01T00:00:00Z\",\"kind\":\"linux\",\"sealed\":false,\"payloads\":[{\"role\":\"kernel\",\"name\":\"k\",\"size\":1,\"sha256\":\"" + Zeros + "\"}]}",
        ImageErrorCode.OversizedField, "$.name")]
    [InlineData("{\"formatVersion\":1,\"name\":\"a\",\"version\":1,\"created\":\"2026-01-01T00:00:00Z\",\"kind\":\"linux\",\"sealed\":false,\"payloads\":[{\"role\":\"kernel\",\"name\":\"k\",\"size\":99999999999,\"sha256\":\"" + Zeros + "\"}]}",
        ImageErrorCode.OversizedField, "$.payloads[0].size")]
    [InlineData("{\"formatVersion\":1,\"name\":\"a\",\"version\":1,\"created\":\"yesterday\",\"kind\":\"elf\",\"sealed\":false,\"payloads\":[{\"role\":\"initrd\",\"name\":\"k\",\"size\":1,\"sha256\":\"XYZ\"}]}",
        ImageErrorCode.MalformedField, "$.payloads[0].sha256")]
    [InlineData("{\"formatVersion\":1,\"name\":\"a\",\"version\":1,\"created\":\"2026-01-01T00:00:00Z\",\"kind\":\"flat\",\"sealed\":false,\"payloads\":[{\"role\":\"kernel\",\"name\":\"k\",\"size\":1,\"sha256\":\"" + Zeros + "\"}]}",
        ImageErrorCode.MalformedField, "boot.loadAddress")]
    [InlineData("{ \"formatVersion\":1,\"name\":\"a\",\"version\":1,\"created\":\"2026-01-01T00:00:00Z\",\"kind\":\"linux\",\"sealed\":false,\"cmdline\":\"\",\"payloads\":[{\"role\":\"kernel\",\"name\":\"k\",\"size\":1,\"sha256\":\"" + Zeros + "\"}]}",
        ImageErrorCode.MalformedField, "canonical")]
    [InlineData("{\"formatVersion\":1,\"name\":\"a\",\"version\":1,\"created\":\"2026-01-01T00:00:00Z\",\"kind\":\"linux\",\"sealed\":false,\"payloads\":[{\"role\":\"kernel\",\"name\":\"k\",\"size\":1,\"sha256\":\"" + Zeros + "\"}]}",
        ImageErrorCode.MalformedField, "$.cmdline")]
    public void MalformedManifestsAreRefusedNamingTheField(string json, ImageErrorCode code, string expected)
    {
        using var f = new ImageFixture();
        var e = Refused(RawBundle(f, json), f.Key.PublicKey);
        Assert.Equal(code, e.Code);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    private const string Zeros = "0000000000000000000000000000000000000000000000000000000000000000";

    [Fact]
    public void SignRefusesAnImageWhosePayloadDoesNotMatch()
    {
        using var f = new ImageFixture();
        string path = f.Path("p.svmi");
        ImageBundle.Pack(path, "kiosk", 1, ImageKind.Multiboot, false, "", null, null, [new(PayloadRole.Kernel, f.Kernel)], DateTimeOffset.UtcNow);
        byte[] bytes = File.ReadAllBytes(path);
        bytes[^100] ^= 1;
        File.WriteAllBytes(path, bytes);
        Assert.Equal(ImageErrorCode.HashMismatch, Assert.Throws<ImageException>(() => ImageBundle.Sign(path, f.Key)).Code);
    }

    [Fact]
    public void NameAndSealingMustMatchThePolicy()
    {
        using var f = new ImageFixture();
        string path = f.Signed(isSealed: false);
        var name = Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(path, [f.Key.PublicKey], "vm", null, "public-desktop"));
        Assert.Equal(ImageErrorCode.NameMismatch, name.Code);
        var seal = Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(path, [f.Key.PublicKey], "vm", null, expectSealed: true));
        Assert.Equal(ImageErrorCode.SealedMismatch, seal.Code);
        string sealedPath = f.Signed("sealed.svmi", isSealed: true);
        var undeclared = Assert.Throws<ImageException>(() => ImageLoader.LoadVerified(sealedPath, [f.Key.PublicKey], "vm", null, expectSealed: false));
        Assert.Equal(ImageErrorCode.SealedMismatch, undeclared.Code);
    }

    private static int IndexOf(byte[] haystack, ReadOnlySpan<byte> needle) => haystack.AsSpan().IndexOf(needle);
}
