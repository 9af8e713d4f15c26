using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using Xunit;

namespace SecureVmm.Verification.Policy;

/// <summary>
/// Signed images are tamper-evident: any change to any byte of a signed image (header,
/// manifest, payload or signature block), any truncation and any appended data is refused
/// by the loader with an ImageException, never accepted and never a crash.
/// </summary>
public sealed class ImageTamperProperties : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("svmm-tamper").FullName;
    private readonly Ed25519SecretKey _key = Ed25519SecretKey.Generate();
    private readonly byte[] _signed;
    private readonly int _manifestEnd;
    private readonly int _signatureStart;

    public ImageTamperProperties()
    {
        var random = new Random(42);
        byte[] kernel = new byte[6000], initrd = new byte[3000];
        random.NextBytes(kernel);
        random.NextBytes(initrd);
        File.WriteAllBytes(Path.Combine(_dir, "kernel"), kernel);
        File.WriteAllBytes(Path.Combine(_dir, "initrd"), initrd);
        string image = Path.Combine(_dir, "good.svmi");
        var manifest = ImageBundle.Pack(image, "desk", 3, ImageKind.Linux, true, "console=ttyS0", null, null,
            [new(PayloadRole.Kernel, Path.Combine(_dir, "kernel")), new(PayloadRole.Initrd, Path.Combine(_dir, "initrd"))], DateTimeOffset.UnixEpoch);
        ImageBundle.Sign(image, _key);
        _signed = File.ReadAllBytes(image);
        _signatureStart = _signed.Length - ImageBundle.SignatureBlockHeaderSize - ImageBundle.SignatureEntrySize;
        _manifestEnd = _signatureStart - (int)manifest.TotalPayloadBytes;
    }

    public void Dispose() => Directory.Delete(_dir, true);

    private bool Refused(byte[] bytes, string name)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        try
        {
            ImageLoader.LoadVerified(path, [_key.PublicKey], "desk", null, "desk");
            return false;
        }
        catch (ImageException)
        {
            return true;
        }
    }

    [Fact]
    public void UntamperedImageLoads() => Assert.False(Refused(_signed, "same.svmi"));

    [Fact]
    public void AnyByteChangeAnywhereIsRefused()
    {
        // Weight each region equally, so the small manifest and signatures get as many tries as the payload.
        var offsets = Gen.OneOf(
            Gen.Choose(0, ImageBundle.HeaderSize - 1),
            Gen.Choose(ImageBundle.HeaderSize, _manifestEnd - 1),
            Gen.Choose(_manifestEnd, _signatureStart - 1),
            Gen.Choose(_signatureStart, _signed.Length - 1));
        var flips = Gen.Choose(1, 255).Select(v => (byte)v);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(PolicySoak.Tests(400)), Prop.ForAll(Arb.From(offsets), Arb.From(flips), (offset, flip) =>
        {
            byte[] bytes = (byte[])_signed.Clone();
            bytes[offset] ^= flip;
            return Refused(bytes, "flipped.svmi");
        }));
    }

    [Fact]
    public void AnyTruncationOrAppendIsRefused()
    {
        var lengths = Gen.OneOf(Gen.Choose(0, _signed.Length - 1), Gen.Choose(_signed.Length + 1, _signed.Length + 200));
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(PolicySoak.Tests(200)), Prop.ForAll(Arb.From(lengths), length =>
        {
            byte[] bytes = new byte[length];
            _signed.AsSpan(0, Math.Min(length, _signed.Length)).CopyTo(bytes);
            return Refused(bytes, "resized.svmi");
        }));
    }

    [Fact]
    public void ReplacingTheSignatureWithOneOverOtherBytesIsRefused()
    {
        // A valid signature by the trusted key, but over a different manifest, must not transfer.
        var messages = ArbMap.Default.GeneratorFor<byte[]>();
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(PolicySoak.Tests(50)), Prop.ForAll(Arb.From(messages), message =>
        {
            byte[] bytes = (byte[])_signed.Clone();
            byte[] signature = _key.Sign(ImageBundle.SignedMessage(message));
            signature.CopyTo(bytes, _signatureStart + ImageBundle.SignatureBlockHeaderSize + ImageBundle.KeyIdSize);
            return Refused(bytes, "resigned.svmi");
        }));
    }
}
