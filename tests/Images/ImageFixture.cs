using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Tests.Images;

/// <summary>Builds signed images in a scratch directory.</summary>
internal sealed class ImageFixture : IDisposable
{
    public ImageFixture()
    {
        Dir = Directory.CreateTempSubdirectory("svmm-image-test").FullName;
        Kernel = RandomFile("vmlinuz", 70_000, 1);
        Initrd = RandomFile("initrd.img", 30_000, 2);
    }

    public string Dir { get; }
    public string Kernel { get; }
    public string Initrd { get; }
    public Ed25519SecretKey Key { get; } = Ed25519SecretKey.Generate();

    public string Path(string name) => System.IO.Path.Combine(Dir, name);

    public string RandomFile(string name, int size, int seed)
    {
        byte[] bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        string path = Path(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>A Linux image with kernel and initrd, signed by <see cref="Key"/>.</summary>
    public string Signed(string name = "desk.svmi", ulong version = 5, bool isSealed = false, string imageName = "secret-desktop")
    {
        string path = Path(name);
        ImageBundle.Pack(path, imageName, version, ImageKind.Linux, isSealed, "console=ttyS0",
            null, null, [new(PayloadRole.Kernel, Kernel), new(PayloadRole.Initrd, Initrd)], DateTimeOffset.UnixEpoch.AddDays(20000));
        ImageBundle.Sign(path, Key);
        return path;
    }

    public void Dispose() => Directory.Delete(Dir, true);
}
