using SecureVmm.Policy.Json;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Policy.Policy;

/// <summary>The outcome of checking a policy: the validated policy, or every problem found.</summary>
public sealed record PolicyCheckResult(ValidatedPolicy? Policy, IReadOnlyList<PolicyProblem> Problems);

/// <summary>
/// Loads policies. The file is read once; the same bytes are hashed, signature-checked, parsed
/// and validated, so what was verified is what runs.
/// </summary>
public static class PolicyLoader
{
    /// <summary>A policy is a few kilobytes; refuse anything absurd before parsing it.</summary>
    public const int MaxPolicyBytes = 1 << 20;

    /// <summary>
    /// The appliance's entry point: reads <paramref name="policyPath"/>, verifies its detached
    /// signature (default POLICY.sig) against <paramref name="adminKey"/>, then validates it.
    /// Throws <see cref="PolicyException"/> naming what failed.
    /// </summary>
    public static ValidatedPolicy LoadVerified(string policyPath, Ed25519PublicKey adminKey, string? signaturePath = null) =>
        LoadVerified(policyPath, [adminKey], signaturePath);

    /// <summary>
    /// As above, with several administrator keys (a trust file, <see cref="KeyFiles.ReadTrustFile"/>):
    /// the signature's key id chooses the key, which must be one of <paramref name="adminKeys"/>.
    /// </summary>
    public static ValidatedPolicy LoadVerified(string policyPath, IReadOnlyCollection<Ed25519PublicKey> adminKeys, string? signaturePath = null)
    {
        byte[] bytes = ReadBytes(policyPath);
        signaturePath ??= PolicySignature.DefaultPath(policyPath);
        string signatureText;
        try
        {
            signatureText = File.ReadAllText(signaturePath);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new PolicyException(PolicyErrorCode.MissingSignature,
                $"{signaturePath}: no signature for {policyPath}; sign it with 'securevmm policy sign'");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolicyException(PolicyErrorCode.Unreadable, $"{signaturePath}: cannot read: {e.Message}");
        }
        var adminKey = PolicySignature.Verify(bytes, policyPath, signatureText, signaturePath, adminKeys);
        var result = Check(bytes, policyPath, adminKey.Id);
        return result.Policy ?? throw Invalid(policyPath, result.Problems);
    }

    /// <summary>Reads and validates without a signature (for `policy check` and tests); throws on any problem.</summary>
    public static ValidatedPolicy LoadUnsigned(string policyPath)
    {
        var result = Check(ReadBytes(policyPath), policyPath, null);
        return result.Policy ?? throw Invalid(policyPath, result.Problems);
    }

    /// <summary>Parses and validates policy bytes, collecting every problem.</summary>
    public static PolicyCheckResult Check(ReadOnlySpan<byte> bytes, string policyPath, string? adminKeyId)
    {
        var problems = new List<PolicyProblem>();
        if (bytes.Length > MaxPolicyBytes)
        {
            problems.Add(new PolicyProblem(PolicyRule.BadValue, policyPath, "$", 1, 1, $"the policy is {bytes.Length} bytes; at most {MaxPolicyBytes} are allowed"));
            return new PolicyCheckResult(null, problems);
        }
        var jsonProblems = new List<JsonProblem>();
        var doc = StrictJson.Parse(bytes, PolicyJsonContext.Default.PolicyDocument, jsonProblems, out var positions);
        foreach (var p in jsonProblems)
        {
            var rule = p.Kind switch
            {
                JsonProblemKind.UnknownField => PolicyRule.UnknownField,
                JsonProblemKind.DuplicateProperty => PolicyRule.DuplicateProperty,
                JsonProblemKind.WrongType => PolicyRule.WrongType,
                _ => PolicyRule.MalformedJson,
            };
            problems.Add(new PolicyProblem(rule, policyPath, p.JsonPath, p.Line, p.Column, p.Message));
        }
        if (doc is null)
        {
            return new PolicyCheckResult(null, problems);
        }
        string baseDirectory = Path.GetDirectoryName(Path.GetFullPath(policyPath)) ?? Directory.GetCurrentDirectory();
        var policy = PolicyValidator.Validate(doc, policyPath, baseDirectory, positions, PolicySignature.Sha256Hex(bytes), adminKeyId, problems);
        // Unknown or duplicate fields leave a readable document, but the policy is still refused.
        return new PolicyCheckResult(problems.Count == 0 ? policy : null, problems);
    }

    /// <summary>Reads a policy file once, with the size limit applied before reading it all.</summary>
    public static byte[] ReadBytes(string policyPath)
    {
        try
        {
            using var stream = new FileStream(policyPath, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (stream.Length > MaxPolicyBytes)
            {
                throw new PolicyException(PolicyErrorCode.TooLarge, $"{policyPath}: the policy is {stream.Length} bytes; at most {MaxPolicyBytes} are allowed");
            }
            byte[] bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
            return bytes;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new PolicyException(PolicyErrorCode.MissingFile, $"{policyPath}: no such policy file");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PolicyException(PolicyErrorCode.Unreadable, $"{policyPath}: cannot read: {e.Message}");
        }
    }

    private static PolicyException Invalid(string policyPath, IReadOnlyList<PolicyProblem> problems) =>
        new(PolicyErrorCode.Invalid,
            $"{policyPath}: {problems.Count} problem{(problems.Count == 1 ? "" : "s")}:\n" + string.Join("\n", problems.Select(p => "  " + p)),
            problems);
}
