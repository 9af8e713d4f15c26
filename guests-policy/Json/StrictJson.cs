using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace SecureVmm.Policy.Json;

/// <summary>What kind of structural problem a JSON document has.</summary>
public enum JsonProblemKind
{
    Syntax,
    UnknownField,
    DuplicateProperty,
    WrongType,
}

/// <summary>One structural problem: where (JSON path, 1-based line and column) and what was expected.</summary>
public sealed record JsonProblem(JsonProblemKind Kind, string JsonPath, int Line, int Column, string Message);

/// <summary>
/// Maps JSON paths ("$.vms[0].network") to where they start in the document, so that problems
/// found after deserialization (by the validator, on plain objects) still name a line and column.
/// </summary>
public sealed class JsonPositions
{
    private readonly Dictionary<string, long> _offsets = new(StringComparer.Ordinal);
    private readonly List<long> _lineStarts = [0];

    internal JsonPositions(ReadOnlySpan<byte> utf8)
    {
        for (int i = 0; i < utf8.Length; i++)
        {
            if (utf8[i] == (byte)'\n')
            {
                _lineStarts.Add(i + 1);
            }
        }
    }

    internal void Record(string path, long offset) => _offsets.TryAdd(path, offset);

    /// <summary>Line and column (both 1-based, column in bytes) of a byte offset.</summary>
    public (int Line, int Column) LineColumn(long offset)
    {
        int index = _lineStarts.BinarySearch(offset);
        if (index < 0)
        {
            index = ~index - 1;
        }
        return (index + 1, (int)(offset - _lineStarts[index]) + 1);
    }

    /// <summary>
    /// Where <paramref name="path"/> starts; when the path itself is absent (a missing field),
    /// the nearest ancestor that is present, so the message still points at the right object.
    /// </summary>
    public (int Line, int Column) Locate(string path)
    {
        string p = path;
        while (true)
        {
            if (_offsets.TryGetValue(p, out long offset))
            {
                return LineColumn(offset);
            }
            int cut = Math.Max(p.LastIndexOf('.'), p.LastIndexOf('['));
            if (cut <= 0)
            {
                return (1, 1);
            }
            p = p[..cut];
        }
    }
}

/// <summary>
/// Strict JSON reading shared by the policy, image manifests and the rollback state file.
/// RFC 8259 JSON only: no comments, no trailing commas (a signed file has one meaning);
/// unknown fields, duplicate properties and wrong value types are rejected. Before
/// deserializing, one pass over the document checks its shape against the source-generated
/// metadata and collects EVERY structural problem with its path, line and column, so an
/// administrator fixes them all in one go instead of one per run.
/// </summary>
public static class StrictJson
{
    public const int MaxDepth = 32;

    private static readonly JsonReaderOptions ReaderOptions = new()
    {
        CommentHandling = JsonCommentHandling.Disallow,
        AllowTrailingCommas = false,
        MaxDepth = MaxDepth,
    };

    /// <summary>
    /// Checks the shape of <paramref name="utf8"/> against <paramref name="typeInfo"/>, then
    /// deserializes it. Returns null on syntax or type problems. When the only problems are
    /// unknown or duplicate fields, returns the document read without them so that the caller
    /// can collect its own problems as well; the caller must refuse it when
    /// <paramref name="problems"/> grew.
    /// </summary>
    public static T? Parse<T>(ReadOnlySpan<byte> utf8, JsonTypeInfo<T> typeInfo, List<JsonProblem> problems, out JsonPositions positions)
        where T : class
    {
        // A UTF-8 byte order mark is not JSON (RFC 8259 section 8.1 says implementations MAY ignore it); we do.
        if (utf8.StartsWith("\uFEFF"u8))
        {
            utf8 = utf8[3..];
        }
        positions = new JsonPositions(utf8);
        int before = problems.Count;
        if (!System.Text.Unicode.Utf8.IsValid(utf8))
        {
            // RFC 8259 section 8.1: JSON text exchanged between systems is UTF-8. The reader would
            // only notice inside strings, and then with an exception that carries no position.
            long bad = FirstInvalidUtf8(utf8);
            var (line, column) = positions.LineColumn(bad);
            problems.Add(new JsonProblem(JsonProblemKind.Syntax, "$", line, column, $"malformed JSON: invalid UTF-8 at byte offset {bad}"));
            return null;
        }
        var walker = new ShapeWalker(typeInfo.Options, positions, problems);
        var reader = new Utf8JsonReader(utf8, ReaderOptions);
        try
        {
            if (!reader.Read())
            {
                problems.Add(new JsonProblem(JsonProblemKind.Syntax, "$", 1, 1, "the document is empty; expected a JSON object"));
                return null;
            }
            walker.Walk(ref reader, typeof(T), "$");
            if (reader.Read())
            {
                var (line, column) = positions.LineColumn(reader.TokenStartIndex);
                problems.Add(new JsonProblem(JsonProblemKind.Syntax, "$", line, column, "unexpected data after the end of the JSON document"));
            }
        }
        catch (JsonException e)
        {
            // The reader stops at the first syntax error; nothing after it can be trusted.
            problems.Add(new JsonProblem(JsonProblemKind.Syntax, e.Path ?? "$", (int)(e.LineNumber ?? 0) + 1,
                (int)(e.BytePositionInLine ?? 0) + 1, SyntaxMessage(e)));
            return null;
        }
        bool onlyExtraFields = true;
        for (int i = before; i < problems.Count; i++)
        {
            onlyExtraFields &= problems[i].Kind is JsonProblemKind.UnknownField or JsonProblemKind.DuplicateProperty;
        }
        if (problems.Count > before && !onlyExtraFields)
        {
            return null;
        }
        if (problems.Count > before)
        {
            // Unknown or repeated fields are already reported; read the rest anyway (skipping them)
            // so the caller can report its own problems too. The caller must still refuse the document.
            var lenient = new JsonSerializerOptions(typeInfo.Options)
            {
                UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip,
                AllowDuplicateProperties = true,
            };
            typeInfo = (JsonTypeInfo<T>)lenient.GetTypeInfo(typeof(T));
        }
        try
        {
            return JsonSerializer.Deserialize(utf8, typeInfo)
                ?? Fail<T>(problems, "$", 1, 1, "the document is null; expected a JSON object");
        }
        catch (JsonException e)
        {
            // The shape pass should have caught everything; this is the serializer's own word as a backstop.
            return Fail<T>(problems, e.Path ?? "$", (int)(e.LineNumber ?? 0) + 1, (int)(e.BytePositionInLine ?? 0) + 1, SyntaxMessage(e));
        }
    }

    private static long FirstInvalidUtf8(ReadOnlySpan<byte> utf8)
    {
        int offset = 0;
        while (offset < utf8.Length)
        {
            if (System.Text.Rune.DecodeFromUtf8(utf8[offset..], out _, out int consumed) != System.Buffers.OperationStatus.Done)
            {
                return offset;
            }
            offset += consumed;
        }
        return offset;
    }

    private static T? Fail<T>(List<JsonProblem> problems, string path, int line, int column, string message)
        where T : class
    {
        problems.Add(new JsonProblem(JsonProblemKind.Syntax, path, line, column, message));
        return null;
    }

    private static string SyntaxMessage(JsonException e)
    {
        // The reader's message ends with its own " LineNumber: n | BytePositionInLine: m." which we report separately.
        string message = e.Message;
        int cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (cut < 0)
        {
            cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        }
        return "malformed JSON: " + (cut > 0 ? message[..cut] : message).TrimEnd();
    }

    /// <summary>Walks the token stream against the serializer's metadata for the expected type.</summary>
    private sealed class ShapeWalker(JsonSerializerOptions options, JsonPositions positions, List<JsonProblem> problems)
    {
        public void Walk(ref Utf8JsonReader reader, Type type, string path)
        {
            positions.Record(path, reader.TokenStartIndex);
            Type underlying = Nullable.GetUnderlyingType(type) ?? type;
            if (reader.TokenType == JsonTokenType.Null)
            {
                return; // Absent and null are the same to the validator, which reports missing required fields.
            }
            JsonTypeInfo info = options.GetTypeInfo(underlying);
            switch (info.Kind)
            {
                case JsonTypeInfoKind.Object:
                    WalkObject(ref reader, info, path);
                    break;
                case JsonTypeInfoKind.Enumerable:
                    WalkArray(ref reader, info.ElementType!, path);
                    break;
                case JsonTypeInfoKind.Dictionary:
                    WalkDictionary(ref reader, info.ElementType!, path);
                    break;
                default:
                    CheckScalar(ref reader, underlying, path);
                    break;
            }
        }

        private void WalkObject(ref Utf8JsonReader reader, JsonTypeInfo info, string path)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                Mismatch(ref reader, path, "an object");
                return;
            }
            var seen = new HashSet<string>(StringComparer.Ordinal);
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                string name = reader.GetString()!;
                string propertyPath = path + "." + name;
                long nameOffset = reader.TokenStartIndex;
                positions.Record(propertyPath, nameOffset);
                reader.Read();
                if (!seen.Add(name))
                {
                    Add(JsonProblemKind.DuplicateProperty, propertyPath, nameOffset,
                        $"duplicate property '{name}'; each field may appear once");
                    reader.Skip();
                    continue;
                }
                JsonPropertyInfo? property = null;
                foreach (var candidate in info.Properties)
                {
                    if (candidate.Name == name)
                    {
                        property = candidate;
                        break;
                    }
                }
                if (property is null)
                {
                    string expected = string.Join(", ", info.Properties.Select(p => p.Name));
                    Add(JsonProblemKind.UnknownField, propertyPath, nameOffset,
                        $"unknown field '{name}'; expected one of: {expected}");
                    reader.Skip();
                    continue;
                }
                Walk(ref reader, property.PropertyType, propertyPath);
            }
        }

        private void WalkArray(ref Utf8JsonReader reader, Type elementType, string path)
        {
            if (reader.TokenType != JsonTokenType.StartArray)
            {
                Mismatch(ref reader, path, "an array");
                return;
            }
            int index = 0;
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                Walk(ref reader, elementType, $"{path}[{index}]");
                index++;
            }
        }

        private void WalkDictionary(ref Utf8JsonReader reader, Type valueType, string path)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                Mismatch(ref reader, path, "an object");
                return;
            }
            var seen = new HashSet<string>(StringComparer.Ordinal);
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                string name = reader.GetString()!;
                string entryPath = path + "." + name;
                long nameOffset = reader.TokenStartIndex;
                reader.Read();
                if (!seen.Add(name))
                {
                    Add(JsonProblemKind.DuplicateProperty, entryPath, nameOffset, $"duplicate key '{name}'");
                    reader.Skip();
                    continue;
                }
                Walk(ref reader, valueType, entryPath);
            }
        }

        private void CheckScalar(ref Utf8JsonReader reader, Type type, string path)
        {
            bool ok;
            string expected;
            if (type == typeof(string))
            {
                ok = reader.TokenType == JsonTokenType.String;
                expected = "a string";
            }
            else if (type == typeof(bool))
            {
                ok = reader.TokenType is JsonTokenType.True or JsonTokenType.False;
                expected = "true or false";
            }
            else if (type == typeof(int))
            {
                ok = reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out _);
                expected = "a whole number between -2147483648 and 2147483647";
            }
            else if (type == typeof(long))
            {
                ok = reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out _);
                expected = "a whole number (64-bit)";
            }
            else if (type == typeof(ulong))
            {
                ok = reader.TokenType == JsonTokenType.Number && reader.TryGetUInt64(out _);
                expected = "a whole number between 0 and 18446744073709551615";
            }
            else if (type == typeof(uint))
            {
                ok = reader.TokenType == JsonTokenType.Number && reader.TryGetUInt32(out _);
                expected = "a whole number between 0 and 4294967295";
            }
            else
            {
                throw new InvalidOperationException($"StrictJson has no rule for {type}; add one");
            }
            if (!ok)
            {
                Mismatch(ref reader, path, expected);
            }
        }

        private void Mismatch(ref Utf8JsonReader reader, string path, string expected)
        {
            string found = reader.TokenType switch
            {
                JsonTokenType.StartObject => "an object",
                JsonTokenType.StartArray => "an array",
                JsonTokenType.String => "a string",
                JsonTokenType.Number => "the number " + System.Text.Encoding.UTF8.GetString(reader.ValueSpan),
                JsonTokenType.True or JsonTokenType.False => "a boolean",
                _ => reader.TokenType.ToString(),
            };
            Add(JsonProblemKind.WrongType, path, reader.TokenStartIndex, $"expected {expected}, found {found}");
            reader.Skip();
        }

        private void Add(JsonProblemKind kind, string path, long offset, string message)
        {
            var (line, column) = positions.LineColumn(offset);
            problems.Add(new JsonProblem(kind, path, line, column, message));
        }
    }
}
