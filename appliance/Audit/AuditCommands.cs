using System.Buffers;
using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using SecureVmm.Policy.Keys;
using SecureVmm.Tcb.Audit;
using Spectre.Console;

namespace SecureVmm.Appliance.Audit;

/// <summary>
/// `securevmm audit verify|query|export|stats`: the auditor's tools over a log file
/// (docs/audit-format.md). Exit status 0 when the log verifies, 2 for a log that does not
/// (the first problem is named with block, offset and sequence) and for usage errors.
/// query/export/stats show the records that verified; a truncated tail (crash) is a warning and
/// still exits 0, any other problem exits 2 after showing what came before it.
/// </summary>
public static class AuditCommands
{
    private const int ExitOk = 0;
    private const int ExitFailed = 2;
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static Command Build()
    {
        var audit = new Command("audit", "Verify, query, export and summarize a SecureVmm audit log.");
        audit.Subcommands.Add(BuildVerify());
        audit.Subcommands.Add(BuildQuery());
        audit.Subcommands.Add(BuildExport());
        audit.Subcommands.Add(BuildStats());
        return audit;
    }

    private static Argument<string> LogArgument() => new("LOG") { Description = "The audit log file." };

    private static Command BuildVerify()
    {
        var log = LogArgument();
        var key = new Option<string?>("--key") { Description = "The audit public key file; checkpoint signatures are checked against it." };
        var command = new Command("verify", "Verify the hash chain, sequence numbers, record encoding and checkpoint signatures.") { log, key };
        command.SetAction(parsed => Verify(parsed.GetValue(log)!, parsed.GetValue(key), parsed.InvocationConfiguration.Output, parsed.InvocationConfiguration.Error));
        return command;
    }

    private static Command BuildQuery()
    {
        var log = LogArgument();
        var vm = new Option<string?>("--vm") { Description = "Only this VM (name from the log header, or its number)." };
        var kind = new Option<string?>("--kind") { Description = "Only this kind: IoIn, IoOut, MmioRead, MmioWrite, Hlt, Cpuid, Rdmsr, Wrmsr, Shutdown, Reset, DebugExit, VmStart, VmStop, ImageVerified, PolicyLoaded, FramesDropped." };
        var port = new Option<string?>("--port") { Description = "Only port I/O to this port (decimal or 0x hex)." };
        var from = new Option<ulong?>("--from") { Description = "First sequence number to show." };
        var to = new Option<ulong?>("--to") { Description = "Last sequence number to show." };
        var limit = new Option<int?>("--limit") { Description = "Show at most N records (default 1000)." };
        var command = new Command("query", "Show matching records as a table.") { log, vm, kind, port, from, to, limit };
        command.SetAction(parsed => Query(parsed.GetValue(log)!, new QueryFilter(parsed.GetValue(vm), parsed.GetValue(kind), parsed.GetValue(port),
            parsed.GetValue(from), parsed.GetValue(to), parsed.GetValue(limit)), parsed.InvocationConfiguration.Output, parsed.InvocationConfiguration.Error));
        return command;
    }

    private static Command BuildExport()
    {
        var log = LogArgument();
        var format = new Option<string>("--format") { Description = "Output format: jsonl (one JSON object per record).", Required = true };
        var command = new Command("export", "Export every record for a SIEM.") { log, format };
        command.SetAction(parsed => Export(parsed.GetValue(log)!, parsed.GetValue(format)!, parsed.InvocationConfiguration.Output, parsed.InvocationConfiguration.Error));
        return command;
    }

    private static Command BuildStats()
    {
        var log = LogArgument();
        var command = new Command("stats", "Count records per VM, per kind and per port.") { log };
        command.SetAction(parsed => Stats(parsed.GetValue(log)!, parsed.InvocationConfiguration.Output, parsed.InvocationConfiguration.Error));
        return command;
    }

    // ---- verify ----

    public static int Verify(string log, string? keyPath, TextWriter output, TextWriter error)
    {
        IAuditSignatureVerifier? trusted = null;
        if (keyPath is not null)
        {
            try
            {
                trusted = new Ed25519AuditVerifier(KeyFiles.ReadPublic(keyPath));
            }
            catch (KeyFileException e)
            {
                error.WriteLine($"securevmm: {e.Message}");
                return ExitFailed;
            }
        }
        AuditVerifyResult result = AuditLogVerifier.VerifyFile(log, trusted);
        if (result.Ok)
        {
            output.WriteLine($"{log}: OK");
            WriteSummary(output, result);
            return ExitOk;
        }
        error.WriteLine($"{log}: FAILED: {result.Problem!.Message}");
        if (result.Header is not null)
        {
            error.WriteLine($"  verified before the problem: {result.Records} records in {result.Blocks} blocks (offsets 0..{result.VerifiedBytes})");
            error.WriteLine($"  {SignedRange(result)}");
        }
        return ExitFailed;
    }

    private static void WriteSummary(TextWriter output, AuditVerifyResult result)
    {
        AuditLogHeader header = result.Header!;
        string range = result.Records == 0 ? "none" : $"1..{result.LastSequence}";
        output.WriteLine($"  records: {result.Records} (sequences {range}), blocks: {result.Blocks} ({result.Checkpoints} checkpoints), VMs: {result.Vms} ({string.Join(", ", header.VmNames)})");
        output.WriteLine($"  {SignedRange(result)}");
        output.WriteLine($"  unsigned tail: {result.UnsignedTailRecords} records after the last checkpoint");
        output.WriteLine($"  log id: {Convert.ToHexStringLower(header.LogId)}  chain head: {Convert.ToHexStringLower(result.ChainHead)}");
    }

    private static string SignedRange(AuditVerifyResult result)
    {
        string range = result.LastSignedSequence == 0 ? "no records" : $"sequences 1..{result.LastSignedSequence}";
        if (result.Checkpoints == 0)
        {
            return "signed: nothing (no checkpoint)";
        }
        if (string.IsNullOrEmpty(result.SigningKeyId))
        {
            return $"signed: nothing ({result.Checkpoints} unsigned checkpoints through {range}; written without an audit key)";
        }
        return result.SignaturesChecked
            ? $"signed: {range} by key {result.SigningKeyId} (signatures verified)"
            : $"signed: {range} by key {result.SigningKeyId} (signatures NOT checked: pass --key PUBKEY)";
    }

    // ---- reading records for query/export/stats ----

    /// <summary>Reads every record that verifies; returns the exit status and prints the problem, if any.</summary>
    private static int ReadRecords(string log, TextWriter error, AuditRecordVisitor visitor, out AuditLogHeader? header)
    {
        AuditVerifyResult result = AuditLogVerifier.VerifyFile(log, null, visitor);
        header = result.Header;
        if (result.Ok)
        {
            return ExitOk;
        }
        AuditProblem problem = result.Problem!;
        if (problem.Kind == AuditProblemKind.Truncated && result.Header is not null)
        {
            error.WriteLine($"{log}: warning: {problem.Message}; showing the {result.Records} records before it");
            return ExitOk;
        }
        error.WriteLine($"{log}: FAILED: {problem.Message}" + (result.Header is null ? "" : $"; showing only the {result.Records} records before it"));
        return ExitFailed;
    }

    /// <summary>Header-only read, for resolving names in filters before the records stream by.</summary>
    private static AuditLogHeader? ReadHeader(string log, TextWriter error)
    {
        try
        {
            using var stream = new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            Span<byte> fixedPart = stackalloc byte[AuditFormat.HeaderFixedSize];
            if (stream.ReadAtLeast(fixedPart, fixedPart.Length, throwOnEndOfStream: false) == fixedPart.Length
                && fixedPart[..8].SequenceEqual(AuditFormat.Magic))
            {
                uint length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(fixedPart[12..]);
                if (length is >= AuditFormat.HeaderFixedSize and <= AuditFormat.MaxHeaderBytes)
                {
                    var bytes = new byte[length];
                    fixedPart.CopyTo(bytes);
                    if (stream.ReadAtLeast(bytes.AsSpan(fixedPart.Length), bytes.Length - fixedPart.Length, throwOnEndOfStream: false) == bytes.Length - fixedPart.Length)
                    {
                        return AuditLogHeader.Decode(bytes);
                    }
                }
            }
            error.WriteLine($"{log}: FAILED: offset 0: not a complete SecureVmm audit log header");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or AuditLogException)
        {
            error.WriteLine($"{log}: FAILED: {e.Message}");
        }
        return null;
    }

    // ---- query ----

    public sealed record QueryFilter(string? Vm, string? Kind, string? Port, ulong? From, ulong? To, int? Limit);

    public static int Query(string log, QueryFilter filter, TextWriter output, TextWriter error)
    {
        AuditKind? kind = null;
        if (filter.Kind is not null)
        {
            if (!AuditKinds.TryParse(filter.Kind, out AuditKind k))
            {
                error.WriteLine($"securevmm: --kind: unknown kind '{filter.Kind}' (expected one of {string.Join(", ", Enum.GetNames<AuditKind>())})");
                return ExitFailed;
            }
            kind = k;
        }
        ushort? port = null;
        if (filter.Port is not null)
        {
            if (!TryParseNumber(filter.Port, out ulong p) || p > ushort.MaxValue)
            {
                error.WriteLine($"securevmm: --port: '{filter.Port}' is not a port number 0..65535 (decimal or 0x hex)");
                return ExitFailed;
            }
            port = (ushort)p;
        }
        int limit = filter.Limit ?? 1000;
        if (limit < 0)
        {
            error.WriteLine("securevmm: --limit: must be 0 or more");
            return ExitFailed;
        }
        AuditLogHeader? header = ReadHeader(log, error);
        if (header is null)
        {
            return ExitFailed;
        }
        int? vmId = null;
        if (filter.Vm is not null)
        {
            vmId = FindVm(header, filter.Vm);
            if (vmId is null)
            {
                error.WriteLine($"securevmm: --vm: no VM '{filter.Vm}' in {log} (VMs: {string.Join(", ", header.VmNames)})");
                return ExitFailed;
            }
        }
        var rows = new List<AuditRecord>();
        long matched = 0;
        int status = ReadRecords(log, error, (in AuditRecord r) =>
        {
            if ((vmId is { } v && r.VmId != v) || (kind is { } k && r.Kind != k)
                || (port is { } pt && (r.Kind is not (AuditKind.IoIn or AuditKind.IoOut) || r.Port != pt))
                || (filter.From is { } f && r.Sequence < f) || (filter.To is { } t && r.Sequence > t))
            {
                return;
            }
            matched++;
            if (rows.Count < limit)
            {
                rows.Add(r);
            }
        }, out _);

        var table = new Table().AddColumns("Seq", "Time (s)", "VM", "vCPU", "CS:EIP", "Kind", "Details");
        foreach (AuditRecord r in rows)
        {
            table.AddRow(Markup.Escape(r.Sequence.ToString(Inv)), AuditRecordText.Time(r.VirtualTimeNs), Markup.Escape(AuditRecordText.VmName(header, r.VmId)),
                r.Vcpu.ToString(Inv), AuditKinds.IsExit(r.Kind) ? AuditRecordText.CsEip(r) : "-", AuditKinds.Name(r.Kind), Markup.Escape(AuditRecordText.Details(r, header)));
        }
        IAnsiConsole console = ConsoleFor(output);
        console.Write(table);
        output.WriteLine(matched > rows.Count ? $"{rows.Count} of {matched} matching records shown (raise --limit for more)" : $"{matched} matching records");
        return status;
    }

    private static int? FindVm(AuditLogHeader header, string vm)
    {
        for (int i = 0; i < header.VmNames.Count; i++)
        {
            if (header.VmNames[i] == vm)
            {
                return i;
            }
        }
        return ushort.TryParse(vm, NumberStyles.None, Inv, out ushort n) && n < header.VmNames.Count ? n : null;
    }

    private static bool TryParseNumber(string text, out ulong value) =>
        text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, Inv, out value)
            : ulong.TryParse(text, NumberStyles.None, Inv, out value);

    private static IAnsiConsole ConsoleFor(TextWriter output)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = output == Console.Out && !Console.IsOutputRedirected ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = ColorSystemSupport.Detect,
            Interactive = InteractionSupport.No,
        });
        if (output != Console.Out || Console.IsOutputRedirected)
        {
            // A pipe or file has no width; do not wrap the details column at 80.
            console.Profile.Width = 200;
        }
        return console;
    }

    // ---- export ----

    public static int Export(string log, string format, TextWriter output, TextWriter error)
    {
        if (format != "jsonl")
        {
            error.WriteLine($"securevmm: --format: unknown format '{format}' (supported: jsonl)");
            return ExitFailed;
        }
        AuditLogHeader? header = ReadHeader(log, error);
        if (header is null)
        {
            return ExitFailed;
        }
        var buffer = new ArrayBufferWriter<byte>(512);
        var json = new Utf8JsonWriter(buffer);
        int status = ReadRecords(log, error, (in AuditRecord r) =>
        {
            buffer.ResetWrittenCount();
            json.Reset(buffer);
            WriteJson(json, in r, header);
            json.Flush();
            output.Write(Encoding.UTF8.GetString(buffer.WrittenSpan));
            output.Write('\n');
        }, out _);
        output.Flush();
        return status;
    }

    /// <summary>One record as a JSON object (field names in docs/audit-format.md, "JSON lines export").</summary>
    public static void WriteJson(Utf8JsonWriter json, in AuditRecord r, AuditLogHeader header)
    {
        json.WriteStartObject();
        json.WriteNumber("seq", r.Sequence);
        json.WriteString("kind", AuditKinds.Name(r.Kind));
        json.WriteNumber("vm_id", r.VmId);
        json.WriteString("vm", AuditRecordText.VmName(header, r.VmId));
        json.WriteNumber("vcpu", r.Vcpu);
        json.WriteNumber("time_ns", r.VirtualTimeNs);
        if (AuditKinds.IsExit(r.Kind))
        {
            json.WriteNumber("cs", r.Cs);
            json.WriteNumber("eip", r.Eip);
        }
        switch (r.Kind)
        {
            case AuditKind.IoIn:
            case AuditKind.IoOut:
                json.WriteNumber("port", r.Port);
                json.WriteNumber("size", r.Size);
                json.WriteNumber("value", r.Value);
                break;
            case AuditKind.MmioRead:
            case AuditKind.MmioWrite:
                json.WriteNumber("address", r.Address);
                json.WriteNumber("size", r.Size);
                json.WriteNumber("value", r.Value);
                break;
            case AuditKind.Cpuid:
                json.WriteNumber("leaf", r.Leaf);
                json.WriteNumber("subleaf", r.Subleaf);
                json.WriteNumber("eax", r.Eax);
                json.WriteNumber("ebx", r.Ebx);
                json.WriteNumber("ecx", r.Ecx);
                json.WriteNumber("edx", r.Edx);
                break;
            case AuditKind.Rdmsr:
            case AuditKind.Wrmsr:
                json.WriteNumber("msr", r.Address);
                json.WriteNumber("value", r.Value);
                break;
            case AuditKind.DebugExit:
                json.WriteNumber("value", r.Value);
                break;
            case AuditKind.VmStop:
                json.WriteNumber("exit_status", r.Value);
                json.WriteString("reason", AuditRecordText.StopReason(r.Reason));
                break;
            case AuditKind.ImageVerified:
                json.WriteString("key_id", AuditRecord.FormatKeyId(r.KeyId));
                json.WriteString("sha256", Convert.ToHexStringLower(r.Digest));
                break;
            case AuditKind.PolicyLoaded:
                json.WriteString("sha256", Convert.ToHexStringLower(r.Digest));
                break;
            case AuditKind.FramesDropped:
                json.WriteString("network", AuditRecordText.NetworkName(header, r.Network));
                json.WriteNumber("reason", r.Reason);
                json.WriteNumber("count", r.Value);
                json.WriteString("sample", Convert.ToHexStringLower(((ReadOnlySpan<byte>)r.Sample)[..r.SampleLength]));
                break;
            default:
                break;
        }
        json.WriteEndObject();
    }

    // ---- stats ----

    public static int Stats(string log, TextWriter output, TextWriter error)
    {
        AuditLogHeader? header = ReadHeader(log, error);
        if (header is null)
        {
            return ExitFailed;
        }
        var perVm = new long[header.VmNames.Count];
        var perVmKind = new Dictionary<(ushort Vm, AuditKind Kind), long>();
        var perVmPort = new Dictionary<(ushort Vm, ushort Port), (long In, long Out)>();
        int status = ReadRecords(log, error, (in AuditRecord r) =>
        {
            perVm[r.VmId]++;
            perVmKind[(r.VmId, r.Kind)] = perVmKind.GetValueOrDefault((r.VmId, r.Kind)) + 1;
            if (r.Kind is AuditKind.IoIn or AuditKind.IoOut)
            {
                var counts = perVmPort.GetValueOrDefault((r.VmId, r.Port));
                perVmPort[(r.VmId, r.Port)] = r.Kind == AuditKind.IoIn ? (counts.In + 1, counts.Out) : (counts.In, counts.Out + 1);
            }
        }, out _);

        IAnsiConsole console = ConsoleFor(output);
        var vms = new Table().AddColumns("VM", "Records");
        for (ushort i = 0; i < perVm.Length; i++)
        {
            vms.AddRow(Markup.Escape(header.VmNames[i]), perVm[i].ToString(Inv));
        }
        console.Write(vms);
        var kinds = new Table().AddColumns("VM", "Kind", "Records");
        foreach (var ((vm, kind), count) in perVmKind.OrderBy(e => e.Key.Vm).ThenBy(e => e.Key.Kind))
        {
            kinds.AddRow(Markup.Escape(header.VmNames[vm]), AuditKinds.Name(kind), count.ToString(Inv));
        }
        console.Write(kinds);
        var ports = new Table().AddColumns("VM", "Port", "IN", "OUT");
        foreach (var ((vm, port), (inCount, outCount)) in perVmPort.OrderBy(e => e.Key.Vm).ThenBy(e => e.Key.Port))
        {
            ports.AddRow(Markup.Escape(header.VmNames[vm]), AuditRecordText.Hex(port), inCount.ToString(Inv), outCount.ToString(Inv));
        }
        console.Write(ports);
        return status;
    }
}
