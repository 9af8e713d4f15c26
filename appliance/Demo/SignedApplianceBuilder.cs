using System.Text.Json;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;

namespace SecureVmm.Appliance.Demo;

/// <summary>
/// Writes a complete signed appliance into one directory, the way an integrator would with the CLI
/// (keygen, image pack/sign, policy sign): an administrator key, a release key, an audit key, signed
/// images and a signed policy. Keys are created once and kept; images and the policy are rewritten
/// (the project's guests build to the same bytes each time). Used by `securevmm demo` and the tests.
/// </summary>
public sealed class SignedApplianceBuilder
{
    public SignedApplianceBuilder(string directory)
    {
        Directory = System.IO.Path.GetFullPath(directory);
        System.IO.Directory.CreateDirectory(Directory);
        AdminKey = LoadOrCreate("admin");
        ReleaseKey = LoadOrCreate("release");
        AuditKey = LoadOrCreate("audit");
    }

    public string Directory { get; }

    public Ed25519SecretKey AdminKey { get; }

    public Ed25519SecretKey ReleaseKey { get; }

    public Ed25519SecretKey AuditKey { get; }

    public string AdminPublicKeyPath => Path("admin.pub");

    public string AuditSecretKeyPath => Path("audit.key");

    public string AuditPublicKeyPath => Path("audit.pub");

    /// <summary>True when the keys were created by this builder (a first run).</summary>
    public bool CreatedKeys { get; private set; }

    public string Path(string relative) => System.IO.Path.Combine(Directory, relative);

    private Ed25519SecretKey LoadOrCreate(string name)
    {
        string secret = Path(name + ".key");
        if (File.Exists(secret))
        {
            return KeyFiles.ReadSecret(secret);
        }
        var key = Ed25519SecretKey.Generate();
        KeyFiles.WriteSecret(secret, key);
        KeyFiles.WritePublic(Path(name + ".pub"), key.PublicKey);
        CreatedKeys = true;
        return key;
    }

    /// <summary>Packs and signs (with the release key) an image at images/NAME.svmi; returns its path.</summary>
    public string Image(string name, ImageKind kind, ReadOnlySpan<byte> kernel, ReadOnlySpan<byte> initrd = default, string commandLine = "", ulong version = 1)
    {
        string images = Path("images");
        System.IO.Directory.CreateDirectory(images);
        string kernelPath = System.IO.Path.Combine(images, name + ".kernel");
        File.WriteAllBytes(kernelPath, kernel.ToArray());
        var inputs = new List<ImageBundle.PackInput> { new(PayloadRole.Kernel, kernelPath) };
        if (!initrd.IsEmpty)
        {
            string initrdPath = System.IO.Path.Combine(images, name + ".initrd");
            File.WriteAllBytes(initrdPath, initrd.ToArray());
            inputs.Add(new ImageBundle.PackInput(PayloadRole.Initrd, initrdPath));
        }
        string imagePath = System.IO.Path.Combine(images, name + ".svmi");
        ImageBundle.Pack(imagePath, name, version, kind, false, commandLine, null, null, inputs, DateTimeOffset.UtcNow);
        ImageBundle.Sign(imagePath, ReleaseKey);
        return imagePath;
    }

    /// <summary>A trust anchor for the release key that may sign for <paramref name="vmNames"/>.</summary>
    public TrustAnchorDocument ReleaseAnchor(params string[] vmNames) => new()
    {
        Id = "release",
        Description = "the builder's release key",
        PublicKey = Convert.ToBase64String(ReleaseKey.PublicKey.Bytes),
        KeyId = ReleaseKey.Id,
        MaySignFor = [.. vmNames],
    };

    /// <summary>Writes the policy (strict JSON) to <paramref name="name"/> and signs it with the administrator key; returns its path.</summary>
    public string Policy(PolicyDocument document, string name = "policy.json")
    {
        ArgumentNullException.ThrowIfNull(document);
        string path = Path(name);
        byte[] bytes = JsonSerializer.SerializeToUtf8Bytes(document, PolicyJsonContext.Default.PolicyDocument);
        var check = PolicyLoader.Check(bytes, path, AdminKey.Id);
        if (check.Policy is null)
        {
            throw new PolicyException(PolicyErrorCode.Invalid, $"{path}: the generated policy is invalid: {string.Join("; ", check.Problems)}", check.Problems);
        }
        File.WriteAllBytes(path, bytes);
        File.WriteAllText(PolicySignature.DefaultPath(path), PolicySignature.Create(bytes, AdminKey));
        return path;
    }
}
