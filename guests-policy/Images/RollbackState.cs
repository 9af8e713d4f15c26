using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using SecureVmm.Policy.Json;

namespace SecureVmm.Policy.Images;

public sealed class RollbackStateDocument
{
    public int? FormatVersion { get; set; }
    public Dictionary<string, RollbackEntryDocument?>? Vms { get; set; }
}

public sealed class RollbackEntryDocument
{
    public ulong? HighestVersion { get; set; }
    public string? ManifestSha256 { get; set; }
    public string? Updated { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    AllowDuplicateProperties = false,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    WriteIndented = true)]
[JsonSerializable(typeof(RollbackStateDocument))]
public sealed partial class RollbackStateJsonContext : JsonSerializerContext;

/// <summary>
/// Rollback protection as Android Verified Boot does it (AVB "rollback index"): per VM, the
/// highest image version ever booted. An older image is refused unless the policy allows
/// rollback for that VM. The state is a JSON file written atomically (temporary file, fsync,
/// rename), so a crash leaves either the old or the new state, never half of one.
/// A missing file is an empty state (first boot); a malformed one is an error, never reset.
/// </summary>
public sealed class RollbackState
{
    public const int FormatVersion = 1;
    private const int MaxStateBytes = 1 << 20;
    private readonly Dictionary<string, RollbackEntryDocument> _entries;

    private RollbackState(string path, Dictionary<string, RollbackEntryDocument> entries)
    {
        FilePath = path;
        _entries = entries;
    }

    public string FilePath { get; }

    public static RollbackState Load(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return new RollbackState(path, new Dictionary<string, RollbackEntryDocument>(StringComparer.Ordinal));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(ImageErrorCode.Unreadable, $"{path}: cannot read the rollback state: {e.Message}");
        }
        if (bytes.Length > MaxStateBytes)
        {
            throw new ImageException(ImageErrorCode.MalformedRollbackState, $"{path}: the rollback state is {bytes.Length} bytes; at most {MaxStateBytes}");
        }
        var problems = new List<JsonProblem>();
        var doc = StrictJson.Parse(bytes, RollbackStateJsonContext.Default.RollbackStateDocument, problems, out var positions);
        if (doc is not null && doc.FormatVersion != FormatVersion)
        {
            var (line, column) = positions.Locate("$.formatVersion");
            problems.Add(new JsonProblem(JsonProblemKind.WrongType, "$.formatVersion", line, column, $"expected formatVersion {FormatVersion}"));
        }
        var entries = new Dictionary<string, RollbackEntryDocument>(StringComparer.Ordinal);
        foreach (var (vm, entry) in doc?.Vms ?? [])
        {
            if (entry?.HighestVersion is null)
            {
                var (line, column) = positions.Locate($"$.vms.{vm}");
                problems.Add(new JsonProblem(JsonProblemKind.WrongType, $"$.vms.{vm}", line, column, "expected an object with 'highestVersion'"));
            }
            else
            {
                entries[vm] = entry;
            }
        }
        if (problems.Count > 0)
        {
            throw new ImageException(ImageErrorCode.MalformedRollbackState,
                $"{path}: malformed rollback state (refusing to boot rather than forget it):\n" +
                string.Join("\n", problems.Select(p => $"  {p.Line}:{p.Column}: {p.JsonPath}: {p.Message}")));
        }
        return new RollbackState(path, entries);
    }

    /// <summary>The highest version booted for <paramref name="vmName"/>, or null if it never booted.</summary>
    public ulong? HighestBooted(string vmName) => _entries.TryGetValue(vmName, out var e) ? e.HighestVersion : null;

    /// <summary>Throws ImageException(Rollback) when <paramref name="version"/> is older than what <paramref name="vmName"/> has booted.</summary>
    public void Check(string vmName, string imageName, ulong version, bool allowRollback)
    {
        if (HighestBooted(vmName) is { } highest && version < highest && !allowRollback)
        {
            throw new ImageException(ImageErrorCode.Rollback,
                $"image '{imageName}' version {version} is older than version {highest}, which VM '{vmName}' has already booted " +
                $"(rollback state {FilePath}); set image.allowRollback in the policy to permit it");
        }
    }

    /// <summary>
    /// Records that <paramref name="vmName"/> is booting <paramref name="image"/>; call after the boot
    /// decision. The highest version only ever rises; the file is rewritten atomically.
    /// </summary>
    public void RecordBoot(string vmName, VerifiedImage image, DateTimeOffset now)
    {
        if (HighestBooted(vmName) is { } highest && image.Version <= highest)
        {
            return;
        }
        _entries[vmName] = new RollbackEntryDocument
        {
            HighestVersion = image.Version,
            ManifestSha256 = image.ManifestSha256,
            Updated = now.UtcDateTime.ToString(ManifestRules.CreatedFormat, CultureInfo.InvariantCulture),
        };
        Save();
    }

    private void Save()
    {
        var doc = new RollbackStateDocument
        {
            FormatVersion = FormatVersion,
            Vms = _entries.OrderBy(e => e.Key, StringComparer.Ordinal).ToDictionary(e => e.Key, e => (RollbackEntryDocument?)e.Value, StringComparer.Ordinal),
        };
        byte[] bytes = JsonSerializer.SerializeToUtf8Bytes(doc, RollbackStateJsonContext.Default.RollbackStateDocument);
        string directory = Path.GetDirectoryName(Path.GetFullPath(FilePath))!;
        string temporary = Path.Combine(directory, "." + Path.GetFileName(FilePath) + ".tmp");
        try
        {
            Directory.CreateDirectory(directory);
            using (var stream = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true); // fsync before rename: the rename must not land before the data
            }
            File.Move(temporary, FilePath, overwrite: true); // rename(2) is atomic within a file system
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageException(ImageErrorCode.Unreadable, $"{FilePath}: cannot write the rollback state: {e.Message}");
        }
        finally
        {
            File.Delete(temporary);
        }
    }
}
