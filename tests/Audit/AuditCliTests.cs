using System.CommandLine;
using System.Text.Json;
using SecureVmm.Appliance;
using SecureVmm.Policy.Keys;
using Xunit;

namespace SecureVmm.Tests.Audit;

/// <summary>`securevmm audit ...` run in-process through the real command line.</summary>
public sealed class AuditCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("securevmm-audit-cli-").FullName;
    private readonly string _log;
    private readonly string _key;
    private readonly string _otherKey;

    public AuditCliTests()
    {
        _log = Path.Combine(_dir, "audit.log");
        File.WriteAllBytes(_log, AuditTestLogs.Write(64));
        _key = Path.Combine(_dir, "audit.pub");
        KeyFiles.WritePublic(_key, AuditTestLogs.Key.PublicKey);
        _otherKey = Path.Combine(_dir, "other.pub");
        KeyFiles.WritePublic(_otherKey, AuditTestLogs.OtherKey.PublicKey);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// Runs the command line as <see cref="Cli.Run"/> does (parse errors: status 2), with output captured
    /// through System.CommandLine's invocation configuration rather than the process-wide Console.
    /// </summary>
    private static (int Status, string Out, string Err) Run(params string[] args)
    {
        ParseResult parsed = Cli.Build().Parse(args);
        if (parsed.Errors.Count > 0)
        {
            return (Cli.ExitUsage, "", string.Join("\n", parsed.Errors.Select(e => e.Message)));
        }
        using var o = new StringWriter();
        using var e = new StringWriter();
        int status = parsed.Invoke(new InvocationConfiguration { Output = o, Error = e });
        return (status, o.ToString(), e.ToString());
    }

    [Fact]
    public void VerifyReportsOkWithCountsAndSignedRange()
    {
        var (status, stdout, stderr) = Run("audit", "verify", _log, "--key", _key);
        Assert.True(status == 0, stderr);
        Assert.Contains("OK", stdout, StringComparison.Ordinal);
        Assert.Contains("records: 64 (sequences 1..64)", stdout, StringComparison.Ordinal);
        Assert.Contains("VMs: 2 (secret, public)", stdout, StringComparison.Ordinal);
        Assert.Contains($"signed: sequences 1..64 by key {AuditTestLogs.Key.Id} (signatures verified)", stdout, StringComparison.Ordinal);
        Assert.Contains("unsigned tail: 0 records", stdout, StringComparison.Ordinal);

        (status, stdout, _) = Run("audit", "verify", _log);
        Assert.Equal(0, status);
        Assert.Contains("signatures NOT checked", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void VerifyFailsWithTheReasonForTamperingTruncationAndTheWrongKey()
    {
        var (status, _, stderr) = Run("audit", "verify", _log, "--key", _otherKey);
        Assert.Equal(2, status);
        Assert.Contains("unknown key", stderr, StringComparison.Ordinal);

        byte[] bytes = File.ReadAllBytes(_log);
        File.WriteAllBytes(_log, bytes[..(bytes.Length - 10)]);
        (status, _, stderr) = Run("audit", "verify", _log, "--key", _key);
        Assert.Equal(2, status);
        Assert.Contains($"{_log}: FAILED: truncated after block", stderr, StringComparison.Ordinal);
        Assert.Contains("verified before the problem", stderr, StringComparison.Ordinal);

        bytes[bytes.Length / 2] ^= 1;
        File.WriteAllBytes(_log, bytes);
        (status, _, stderr) = Run("audit", "verify", _log, "--key", _key);
        Assert.Equal(2, status);
        Assert.Contains("block", stderr, StringComparison.Ordinal);
        Assert.Contains("offset", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void BadInputsAreErrorsNotStackTraces()
    {
        var (status, _, stderr) = Run("audit", "verify", Path.Combine(_dir, "missing.log"));
        Assert.Equal(2, status);
        Assert.Contains("missing.log", stderr, StringComparison.Ordinal);

        (status, _, stderr) = Run("audit", "verify", _log, "--key", _log);
        Assert.Equal(2, status);
        Assert.Contains("line 1", stderr, StringComparison.Ordinal);

        (status, _, stderr) = Run("audit", "query", _log, "--kind", "teleport");
        Assert.Equal(2, status);
        Assert.Contains("unknown kind 'teleport'", stderr, StringComparison.Ordinal);

        (status, _, stderr) = Run("audit", "query", _log, "--port", "0x1FFFF");
        Assert.Equal(2, status);
        Assert.Contains("--port", stderr, StringComparison.Ordinal);

        (status, _, stderr) = Run("audit", "query", _log, "--vm", "nosuchvm");
        Assert.Equal(2, status);
        Assert.Contains("secret, public", stderr, StringComparison.Ordinal);

        (status, _, stderr) = Run("audit", "export", _log, "--format", "xml");
        Assert.Equal(2, status);
        Assert.Contains("jsonl", stderr, StringComparison.Ordinal);

        (status, _, stderr) = Run("audit", "export", _log);
        Assert.Equal(2, status);

        (status, _, _) = Run("audit", "query");
        Assert.Equal(2, status);

        string junk = Path.Combine(_dir, "junk.log");
        File.WriteAllText(junk, "hello");
        (status, _, stderr) = Run("audit", "stats", junk);
        Assert.Equal(2, status);
        Assert.Contains("offset 0", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void QueryFiltersByVmKindPortAndSequence()
    {
        // Record i has kind index i % 16 and VM i % 2 (AuditTestLogs.Record): IoOut is index 1, so VM "public".
        var (status, stdout, stderr) = Run("audit", "query", _log, "--vm", "public", "--kind", "io-out");
        Assert.True(status == 0, stderr);
        Assert.Contains("IoOut", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("IoIn", stdout, StringComparison.Ordinal);
        Assert.Contains("4 matching records", stdout, StringComparison.Ordinal);

        (status, stdout, _) = Run("audit", "query", _log, "--vm", "secret", "--kind", "IoOut");
        Assert.Equal(0, status);
        Assert.Contains("0 matching records", stdout, StringComparison.Ordinal);

        (status, stdout, _) = Run("audit", "query", _log, "--from", "10", "--to", "12");
        Assert.Equal(0, status);
        Assert.Contains("3 matching records", stdout, StringComparison.Ordinal);

        // Record 1 (sequence 2) is IoOut to port 0x3F8 + 1.
        (status, stdout, _) = Run("audit", "query", _log, "--port", "0x3F9");
        Assert.Equal(0, status);
        Assert.Contains("port 0x3f9", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("port 0x3fa", stdout, StringComparison.Ordinal);

        (status, stdout, _) = Run("audit", "query", _log, "--limit", "5");
        Assert.Equal(0, status);
        Assert.Contains("5 of 64 matching records shown", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void ExportWritesOneJsonObjectPerRecord()
    {
        var (status, stdout, stderr) = Run("audit", "export", _log, "--format", "jsonl");
        Assert.True(status == 0, stderr);
        string[] lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(64, lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            JsonElement root = doc.RootElement;
            Assert.Equal(i + 1, root.GetProperty("seq").GetInt32());
            Assert.Equal(i % 2 == 0 ? "secret" : "public", root.GetProperty("vm").GetString());
        }
        using var io = JsonDocument.Parse(lines[1]);
        Assert.Equal("IoOut", io.RootElement.GetProperty("kind").GetString());
        Assert.Equal(0x3F9, io.RootElement.GetProperty("port").GetInt32());
        using var image = JsonDocument.Parse(lines[13]);
        Assert.Equal("ImageVerified", image.RootElement.GetProperty("kind").GetString());
        Assert.Equal("0123456789abcdef", image.RootElement.GetProperty("key_id").GetString());
        Assert.Equal(64, image.RootElement.GetProperty("sha256").GetString()!.Length);
    }

    [Fact]
    public void StatsCountsPerVmKindAndPort()
    {
        var (status, stdout, stderr) = Run("audit", "stats", _log);
        Assert.True(status == 0, stderr);
        Assert.Contains("secret", stdout, StringComparison.Ordinal);
        Assert.Contains("Cpuid", stdout, StringComparison.Ordinal);
        Assert.Contains("0x3f9", stdout, StringComparison.Ordinal);
        // 64 records, VMs alternate: 32 each.
        Assert.Matches(@"secret\s*│\s*32\s", stdout);
        Assert.Matches(@"public\s*│\s*32\s", stdout);
    }

    [Fact]
    public void TruncatedLogIsStillQueryableWithAWarning()
    {
        byte[] bytes = File.ReadAllBytes(_log);
        File.WriteAllBytes(_log, bytes[..(bytes.Length * 2 / 3)]);
        var (status, stdout, stderr) = Run("audit", "query", _log, "--limit", "1000");
        Assert.Equal(0, status);
        Assert.Contains("warning: truncated after block", stderr, StringComparison.Ordinal);
        Assert.Contains("matching records", stdout, StringComparison.Ordinal);
    }
}
