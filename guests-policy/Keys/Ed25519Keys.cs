using System.Security.Cryptography;
using System.Text;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;

namespace SecureVmm.Policy.Keys;

/// <summary>Problem with a key file or key material; the message names the file and what was expected.</summary>
public sealed class KeyFileException(string message) : Exception(message);

/// <summary>An Ed25519 public key (RFC 8032) and its id: the first 8 bytes of SHA-256(key), in hex.</summary>
public sealed class Ed25519PublicKey
{
    public const int Size = 32;
    private readonly byte[] _key;

    public Ed25519PublicKey(ReadOnlySpan<byte> key)
    {
        if (key.Length != Size)
        {
            throw new KeyFileException($"an Ed25519 public key is {Size} bytes, got {key.Length}");
        }
        _key = key.ToArray();
        Id = Convert.ToHexStringLower(SHA256.HashData(_key).AsSpan(0, 8));
    }

    public string Id { get; }
    public ReadOnlySpan<byte> Bytes => _key;

    /// <summary>True when <paramref name="signature"/> is a valid Ed25519 signature of <paramref name="message"/>.</summary>
    public bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        if (signature.Length != Ed25519SecretKey.SignatureSize)
        {
            return false;
        }
        var verifier = new Ed25519Signer();
        verifier.Init(false, new Ed25519PublicKeyParameters(_key, 0));
        byte[] m = message.ToArray();
        verifier.BlockUpdate(m, 0, m.Length);
        return verifier.VerifySignature(signature.ToArray());
    }
}

/// <summary>An Ed25519 secret key (its 32-byte seed) with the public key it derives.</summary>
public sealed class Ed25519SecretKey
{
    public const int SeedSize = 32;
    public const int SignatureSize = 64;
    private readonly byte[] _seed;

    public Ed25519SecretKey(ReadOnlySpan<byte> seed)
    {
        if (seed.Length != SeedSize)
        {
            throw new KeyFileException($"an Ed25519 secret key seed is {SeedSize} bytes, got {seed.Length}");
        }
        _seed = seed.ToArray();
        var priv = new Ed25519PrivateKeyParameters(_seed, 0);
        PublicKey = new Ed25519PublicKey(priv.GeneratePublicKey().GetEncoded());
    }

    public Ed25519PublicKey PublicKey { get; }
    public string Id => PublicKey.Id;

    public static Ed25519SecretKey Generate() => new(RandomNumberGenerator.GetBytes(SeedSize));

    public byte[] Sign(ReadOnlySpan<byte> message)
    {
        var signer = new Ed25519Signer();
        signer.Init(true, new Ed25519PrivateKeyParameters(_seed, 0));
        byte[] m = message.ToArray();
        signer.BlockUpdate(m, 0, m.Length);
        return signer.GenerateSignature();
    }

    internal ReadOnlySpan<byte> Seed => _seed;
}

/// <summary>
/// Key files: small text files, one "field: value" per line after a header line.
/// <code>
/// SecureVmm Ed25519 secret key v1      |  SecureVmm Ed25519 public key v1
/// id: 0123456789abcdef                 |  id: 0123456789abcdef
/// secret: BASE64(32-byte seed)         |  public: BASE64(32-byte key)
/// </code>
/// </summary>
public static class KeyFiles
{
    public const string SecretHeader = "SecureVmm Ed25519 secret key v1";
    public const string PublicHeader = "SecureVmm Ed25519 public key v1";

    public static string FormatSecret(Ed25519SecretKey key) =>
        $"{SecretHeader}\nid: {key.Id}\nsecret: {Convert.ToBase64String(key.Seed)}\n";

    public static string FormatPublic(Ed25519PublicKey key) =>
        $"{PublicHeader}\nid: {key.Id}\npublic: {Convert.ToBase64String(key.Bytes)}\n";

    /// <summary>Writes a secret key readable by the owner only.</summary>
    public static void WriteSecret(string path, Ed25519SecretKey key)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        using var stream = new FileStream(path, options);
        stream.Write(Encoding.UTF8.GetBytes(FormatSecret(key)));
    }

    public static void WritePublic(string path, Ed25519PublicKey key) =>
        File.WriteAllText(path, FormatPublic(key));

    public static Ed25519SecretKey ReadSecret(string path) =>
        new(ReadField(path, SecretHeader, "secret", Ed25519SecretKey.SeedSize));

    public static Ed25519PublicKey ReadPublic(string path) =>
        new(ReadField(path, PublicHeader, "public", Ed25519PublicKey.Size));

    /// <summary>
    /// Reads a trust file: one or more public key files concatenated (each block starts with the
    /// public key header line). A single public key file is a trust file with one key.
    /// </summary>
    public static IReadOnlyList<Ed25519PublicKey> ReadTrustFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KeyFileException($"{path}: cannot read trust file: {e.Message}");
        }
        return ParseTrustFile(text, path);
    }

    /// <summary>Parses trust file text; <paramref name="name"/> is used in error messages.</summary>
    public static IReadOnlyList<Ed25519PublicKey> ParseTrustFile(string text, string name)
    {
        string[] lines = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        var keys = new List<Ed25519PublicKey>();
        int start = -1;
        for (int i = 0; i <= lines.Length; i++)
        {
            bool boundary = i == lines.Length || lines[i].Trim() == PublicHeader;
            if (!boundary)
            {
                if (start < 0 && lines[i].Trim().Length > 0)
                {
                    throw new KeyFileException($"{name}: line {i + 1}: expected \"{PublicHeader}\"");
                }
                continue;
            }
            if (start >= 0)
            {
                var key = ParsePublic(string.Join('\n', lines[start..i]), $"{name} (key starting at line {start + 1})");
                if (keys.Any(k => k.Id == key.Id))
                {
                    throw new KeyFileException($"{name}: line {start + 1}: key {key.Id} is listed twice");
                }
                keys.Add(key);
            }
            start = i;
        }
        if (keys.Count == 0)
        {
            throw new KeyFileException($"{name}: no public keys; expected one or more blocks starting with \"{PublicHeader}\"");
        }
        return keys;
    }

    /// <summary>Parses key file text; <paramref name="name"/> is used in error messages.</summary>
    public static Ed25519PublicKey ParsePublic(string text, string name) =>
        new(ParseField(text, name, PublicHeader, "public", Ed25519PublicKey.Size));

    private static byte[] ReadField(string path, string header, string field, int size)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KeyFileException($"{path}: cannot read key file: {e.Message}");
        }
        return ParseField(text, path, header, field, size);
    }

    private static byte[] ParseField(string text, string name, string header, string field, int size)
    {
        string[] lines = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        if (lines.Length == 0 || lines[0].Trim() != header)
        {
            throw new KeyFileException($"{name}: line 1: expected \"{header}\"");
        }
        string? id = null;
        byte[]? value = null;
        for (int i = 1; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            if (line.Length == 0)
            {
                continue;
            }
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                throw new KeyFileException($"{name}: line {i + 1}: expected \"field: value\"");
            }
            string key = line[..colon].Trim();
            string val = line[(colon + 1)..].Trim();
            if (key == "id")
            {
                id = val;
            }
            else if (key == field)
            {
                try
                {
                    value = Convert.FromBase64String(val);
                }
                catch (FormatException)
                {
                    throw new KeyFileException($"{name}: line {i + 1}: field '{field}' is not base64");
                }
                if (value.Length != size)
                {
                    throw new KeyFileException($"{name}: line {i + 1}: field '{field}' must be {size} bytes, got {value.Length}");
                }
            }
            else
            {
                throw new KeyFileException($"{name}: line {i + 1}: unknown field '{key}'");
            }
        }
        if (value is null)
        {
            throw new KeyFileException($"{name}: missing field '{field}'");
        }
        string actualId = field == "secret" ? new Ed25519SecretKey(value).Id : new Ed25519PublicKey(value).Id;
        if (id is not null && id != actualId)
        {
            throw new KeyFileException($"{name}: field 'id' is {id} but the key's id is {actualId}");
        }
        return value;
    }
}
