using System.Collections.Immutable;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using SecureVmm.Policy.Json;

namespace SecureVmm.Policy.Images;

// The image manifest (docs/image-format.md). The document types mirror the JSON; ImageManifest
// is the checked form. The manifest is stored in canonical form (the serializer's own compact
// output, fields in declaration order); a manifest in any other form is refused, so one
// manifest has exactly one byte string to sign.

public sealed class ManifestDocument
{
    public int? FormatVersion { get; set; }
    public string? Name { get; set; }
    public ulong? Version { get; set; }
    public string? Created { get; set; }
    public string? Kind { get; set; }
    public bool? Sealed { get; set; }
    public string? Cmdline { get; set; }
    public BootDocument? Boot { get; set; }
    public List<PayloadDocument?>? Payloads { get; set; }
}

public sealed class BootDocument
{
    public uint? LoadAddress { get; set; }
    public uint? Entry { get; set; }
}

public sealed class PayloadDocument
{
    public string? Role { get; set; }
    public string? Name { get; set; }
    public long? Size { get; set; }
    public string? Sha256 { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    AllowDuplicateProperties = false,
    AllowTrailingCommas = false,
    ReadCommentHandling = JsonCommentHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    MaxDepth = 8,
    WriteIndented = false)]
[JsonSerializable(typeof(ManifestDocument))]
public sealed partial class ManifestJsonContext : JsonSerializerContext;

/// <summary>How the kernel payload boots (DESIGN.md "Dev boot").</summary>
public enum ImageKind
{
    /// <summary>Multiboot v1 ELF32 kernel; entry and load addresses come from its header.</summary>
    Multiboot,
    /// <summary>Linux bzImage, 32-bit boot protocol; initrd optional.</summary>
    Linux,
    /// <summary>Flat binary loaded at boot.loadAddress and entered at boot.entry.</summary>
    Flat,
}

public enum PayloadRole { Kernel, Initrd }

public sealed record PayloadEntry(PayloadRole Role, string Name, long Size, string Sha256);

/// <summary>A manifest that passed every format rule (not yet signature-checked on its own).</summary>
public sealed record ImageManifest(
    string Name,
    ulong Version,
    DateTimeOffset Created,
    ImageKind Kind,
    bool Sealed,
    string CommandLine,
    uint? LoadAddress,
    uint? Entry,
    ImmutableArray<PayloadEntry> Payloads)
{
    public long TotalPayloadBytes => Payloads.Sum(p => p.Size);
}

/// <summary>Format rules and limits of manifests.</summary>
public static partial class ManifestRules
{
    public const int FormatVersion = 1;
    public const int MaxManifestBytes = 64 * 1024;
    public const int MaxNameLength = 32;
    /// <summary>Linux x86 COMMAND_LINE_SIZE is 2048 bytes including the terminating NUL.</summary>
    public const int MaxCommandLineBytes = 2047;
    public const int MaxPayloads = 4;
    public const long MaxPayloadBytes = 1L << 30;
    public const long MaxTotalPayloadBytes = 1536L << 20;
    public const string CreatedFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'";

    public static readonly IReadOnlyDictionary<string, ImageKind> Kinds = new Dictionary<string, ImageKind>(StringComparer.Ordinal)
    {
        ["multiboot"] = ImageKind.Multiboot,
        ["linux"] = ImageKind.Linux,
        ["flat"] = ImageKind.Flat,
    };

    public static readonly IReadOnlyDictionary<string, PayloadRole> Roles = new Dictionary<string, PayloadRole>(StringComparer.Ordinal)
    {
        ["kernel"] = PayloadRole.Kernel,
        ["initrd"] = PayloadRole.Initrd,
    };

    [GeneratedRegex("^[a-z][a-z0-9-]{0,31}$", RegexOptions.CultureInvariant)]
    public static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$", RegexOptions.CultureInvariant)]
    public static partial Regex PayloadNamePattern();

    [GeneratedRegex("^[0-9a-f]{64}$", RegexOptions.CultureInvariant)]
    private static partial Regex Sha256Pattern();

    public static string KindName(ImageKind kind) => Kinds.First(p => p.Value == kind).Key;
    public static string RoleName(PayloadRole role) => Roles.First(p => p.Value == role).Key;

    /// <summary>The canonical bytes of a manifest document.</summary>
    public static byte[] Serialize(ManifestDocument doc) => JsonSerializer.SerializeToUtf8Bytes(doc, ManifestJsonContext.Default.ManifestDocument);

    /// <summary>Builds the document for a checked manifest (used by `image pack`).</summary>
    public static ManifestDocument ToDocument(ImageManifest m) => new()
    {
        FormatVersion = FormatVersion,
        Name = m.Name,
        Version = m.Version,
        Created = m.Created.UtcDateTime.ToString(CreatedFormat, CultureInfo.InvariantCulture),
        Kind = KindName(m.Kind),
        Sealed = m.Sealed,
        Cmdline = m.CommandLine,
        Boot = m.Kind == ImageKind.Flat ? new BootDocument { LoadAddress = m.LoadAddress, Entry = m.Entry } : null,
        Payloads = [.. m.Payloads.Select(p => (PayloadDocument?)new PayloadDocument { Role = RoleName(p.Role), Name = p.Name, Size = p.Size, Sha256 = p.Sha256 })],
    };

    /// <summary>
    /// Parses and checks manifest bytes taken from <paramref name="file"/>; throws an
    /// ImageException listing every problem, each with its JSON path and line/column.
    /// </summary>
    public static ImageManifest Parse(ReadOnlySpan<byte> bytes, string file)
    {
        if (bytes.Length > MaxManifestBytes)
        {
            throw new ImageException(ImageErrorCode.OversizedField, $"{file}: the manifest is {bytes.Length} bytes; at most {MaxManifestBytes} are allowed");
        }
        var jsonProblems = new List<JsonProblem>();
        var doc = StrictJson.Parse(bytes, ManifestJsonContext.Default.ManifestDocument, jsonProblems, out var positions);
        if (doc is null || jsonProblems.Count > 0)
        {
            throw new ImageException(ImageErrorCode.MalformedJson,
                $"{file}: malformed manifest:\n" + string.Join("\n", jsonProblems.Select(p => $"  manifest {p.Line}:{p.Column}: {p.JsonPath}: {p.Message}")));
        }
        var problems = new List<(ImageErrorCode Code, string Path, string Message)>();
        var manifest = Check(doc, problems);
        if (problems.Count == 0 && !bytes.SequenceEqual(Serialize(doc)))
        {
            problems.Add((ImageErrorCode.MalformedField, "$", "the manifest is not in canonical form (compact JSON, fields in the documented order); re-create it with 'securevmm image pack'"));
        }
        if (problems.Count > 0)
        {
            var code = problems.Any(p => p.Code == ImageErrorCode.OversizedField) ? ImageErrorCode.OversizedField : ImageErrorCode.MalformedField;
            throw new ImageException(code, $"{file}: bad manifest:\n" + string.Join("\n", problems.Select(p =>
            {
                var (line, column) = positions.Locate(p.Path);
                return $"  manifest {line}:{column}: {p.Path}: {p.Message}";
            })));
        }
        return manifest!;
    }

    private static ImageManifest? Check(ManifestDocument doc, List<(ImageErrorCode, string, string)> problems)
    {
        void Bad(string path, string message) => problems.Add((ImageErrorCode.MalformedField, path, message));
        void Big(string path, string message) => problems.Add((ImageErrorCode.OversizedField, path, message));

        if (doc.FormatVersion != FormatVersion)
        {
            Bad("$.formatVersion", $"expected formatVersion {FormatVersion}, found {doc.FormatVersion?.ToString(CultureInfo.InvariantCulture) ?? "none"}");
        }
        if (doc.Name is null)
        {
            Bad("$.name", "missing field 'name'");
        }
        else if (doc.Name.Length > MaxNameLength)
        {
            Big("$.name", $"the name is {doc.Name.Length} characters; at most {MaxNameLength} are allowed");
        }
        else if (!NamePattern().IsMatch(doc.Name))
        {
            Bad("$.name", $"\"{doc.Name}\" is not a name (a lowercase letter, then lowercase letters, digits or '-')");
        }
        if (doc.Version is null)
        {
            Bad("$.version", "missing field 'version'; expected a whole number, higher for newer images");
        }
        DateTimeOffset created = default;
        if (doc.Created is null || !DateTimeOffset.TryParseExact(doc.Created, CreatedFormat, CultureInfo.InvariantCulture,
                DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out created))
        {
            Bad("$.created", $"expected the creation time as UTC \"YYYY-MM-DDTHH:MM:SSZ\", found {(doc.Created is null ? "none" : $"\"{doc.Created}\"")}");
        }
        ImageKind kind = ImageKind.Flat;
        if (doc.Kind is null || !Kinds.TryGetValue(doc.Kind, out kind))
        {
            Bad("$.kind", $"expected kind \"multiboot\", \"linux\" or \"flat\", found {(doc.Kind is null ? "none" : $"\"{doc.Kind}\"")}");
        }
        if (doc.Sealed is null)
        {
            Bad("$.sealed", "missing field 'sealed'; expected true or false");
        }
        string cmdline = doc.Cmdline ?? "";
        if (doc.Cmdline is null)
        {
            Bad("$.cmdline", "missing field 'cmdline'; expected the kernel command line (\"\" for none)");
        }
        else if (System.Text.Encoding.UTF8.GetByteCount(cmdline) > MaxCommandLineBytes)
        {
            Big("$.cmdline", $"the command line is {System.Text.Encoding.UTF8.GetByteCount(cmdline)} bytes; at most {MaxCommandLineBytes} are allowed");
        }
        else if (cmdline.Any(c => c < ' ' || c == '\x7f'))
        {
            Bad("$.cmdline", "the command line contains control characters");
        }
        if (kind == ImageKind.Flat && doc.Kind is not null)
        {
            if (doc.Boot?.LoadAddress is null || doc.Boot.Entry is null)
            {
                Bad("$.boot", "a flat image needs boot.loadAddress and boot.entry");
            }
        }
        else if (doc.Boot is not null)
        {
            Bad("$.boot", $"boot addresses apply to flat images only; a {doc.Kind} kernel carries its own");
        }

        var payloads = new List<PayloadEntry>();
        if (doc.Payloads is null || doc.Payloads.Count == 0)
        {
            Bad("$.payloads", "missing or empty 'payloads'; expected at least the kernel");
        }
        else if (doc.Payloads.Count > MaxPayloads)
        {
            Big("$.payloads", $"{doc.Payloads.Count} payloads; at most {MaxPayloads} are allowed");
        }
        else
        {
            long total = 0;
            for (int i = 0; i < doc.Payloads.Count; i++)
            {
                string path = $"$.payloads[{i}]";
                var p = doc.Payloads[i];
                if (p is null)
                {
                    Bad(path, "expected an object, found null");
                    continue;
                }
                if (p.Role is null || !Roles.TryGetValue(p.Role, out var role))
                {
                    Bad(path + ".role", "expected role \"kernel\" or \"initrd\"");
                    continue;
                }
                if (i == 0 && role != PayloadRole.Kernel)
                {
                    Bad(path + ".role", "the first payload must be the kernel");
                }
                if (i > 0 && payloads.Any(q => q.Role == role))
                {
                    Bad(path + ".role", $"only one {p.Role} payload is allowed");
                }
                if (role == PayloadRole.Initrd && kind == ImageKind.Flat)
                {
                    Bad(path + ".role", "a flat image has no initrd");
                }
                if (p.Name is null || !PayloadNamePattern().IsMatch(p.Name))
                {
                    Bad(path + ".name", "expected a file name of 1 to 64 of A-Z a-z 0-9 . _ - (not starting with '.')");
                }
                if (p.Size is null || p.Size < 1)
                {
                    Bad(path + ".size", "expected the payload size in bytes, at least 1");
                }
                else if (p.Size > MaxPayloadBytes)
                {
                    Big(path + ".size", $"the payload is {p.Size} bytes; at most {MaxPayloadBytes} are allowed");
                }
                else
                {
                    total += p.Size.Value;
                }
                if (p.Sha256 is null || !Sha256Pattern().IsMatch(p.Sha256))
                {
                    Bad(path + ".sha256", "expected the SHA-256 of the payload as 64 lowercase hex digits");
                }
                payloads.Add(new PayloadEntry(role, p.Name ?? "", p.Size ?? 0, p.Sha256 ?? ""));
            }
            if (total > MaxTotalPayloadBytes)
            {
                Big("$.payloads", $"the payloads total {total} bytes; at most {MaxTotalPayloadBytes} are allowed");
            }
        }
        if (problems.Count > 0)
        {
            return null;
        }
        return new ImageManifest(doc.Name!, doc.Version!.Value, created, kind, doc.Sealed!.Value, cmdline,
            doc.Boot?.LoadAddress, doc.Boot?.Entry, [.. payloads]);
    }
}
