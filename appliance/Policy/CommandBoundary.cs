using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;

namespace SecureVmm.Appliance.Policy;

/// <summary>
/// Where the policy, image and key commands meet the user: every expected failure becomes a
/// one-line (or one-line-per-problem) message on stderr and exit status 2 (DESIGN.md
/// "Exit status"); a .NET stack trace never reaches the user for bad input.
/// </summary>
internal static class CommandBoundary
{
    public static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (PolicyException e)
        {
            Console.Error.WriteLine($"securevmm: {Describe(e.Code)}: {e.Message}");
            return Cli.ExitUsage;
        }
        catch (ImageException e)
        {
            Console.Error.WriteLine($"securevmm: {Describe(e.Code)}: {e.Message}");
            return Cli.ExitUsage;
        }
        catch (KeyFileException e)
        {
            Console.Error.WriteLine($"securevmm: key error: {e.Message}");
            return Cli.ExitUsage;
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"securevmm: {e.Message}");
            return Cli.ExitUsage;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"securevmm: I/O error: {e.Message}");
            return Cli.ExitUsage;
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            // Path APIs reject some user-supplied paths (e.g. with a NUL byte) this way.
            Console.Error.WriteLine($"securevmm: invalid argument: {e.Message}");
            return Cli.ExitUsage;
        }
    }

    // How each refusal is named in the one-line message, e.g. "securevmm: hash mismatch: FILE: ...".
    private static readonly Dictionary<PolicyErrorCode, string> PolicyErrorNames = new()
    {
        [PolicyErrorCode.MissingFile] = "missing file",
        [PolicyErrorCode.Unreadable] = "unreadable file",
        [PolicyErrorCode.TooLarge] = "policy too large",
        [PolicyErrorCode.Invalid] = "invalid policy",
        [PolicyErrorCode.MissingSignature] = "missing policy signature",
        [PolicyErrorCode.MalformedSignature] = "malformed policy signature",
        [PolicyErrorCode.WrongKey] = "wrong key",
        [PolicyErrorCode.BadSignature] = "bad signature",
        [PolicyErrorCode.DigestMismatch] = "policy changed since signing",
    };

    private static string Describe(PolicyErrorCode code) => PolicyErrorNames.TryGetValue(code, out var name) ? name : code.ToString();

    private static readonly Dictionary<ImageErrorCode, string> ImageErrorNames = new()
    {
        [ImageErrorCode.MissingFile] = "missing file",
        [ImageErrorCode.Unreadable] = "unreadable file",
        [ImageErrorCode.NotAnImage] = "not an image",
        [ImageErrorCode.MalformedJson] = "malformed manifest JSON",
        [ImageErrorCode.MalformedField] = "malformed field",
        [ImageErrorCode.OversizedField] = "oversized field",
        [ImageErrorCode.TruncatedPayload] = "truncated payload",
        [ImageErrorCode.TrailingData] = "trailing data",
        [ImageErrorCode.Unsigned] = "unsigned image",
        [ImageErrorCode.WrongKey] = "wrong key",
        [ImageErrorCode.BadSignature] = "bad signature",
        [ImageErrorCode.HashMismatch] = "hash mismatch",
        [ImageErrorCode.NameMismatch] = "image name mismatch",
        [ImageErrorCode.SealedMismatch] = "sealing mismatch",
        [ImageErrorCode.Rollback] = "version rollback",
        [ImageErrorCode.MalformedRollbackState] = "malformed rollback state",
    };

    private static string Describe(ImageErrorCode code) => ImageErrorNames.TryGetValue(code, out var name) ? name : code.ToString();
}

/// <summary>A command-line value that parsed but makes no sense (e.g. a bad address); exit status 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
