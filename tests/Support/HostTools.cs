using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Support;

/// <summary>
/// Host programs some integration tests need (qemu, tshark ...). CI installs them; a developer
/// machine may not have them. A test that cannot run says why in its output — and under CI
/// (CI=true) a missing tool is a failure, never a silent pass.
/// </summary>
public static class HostTools
{
    public static string? Find(string program)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            if (dir.Length == 0)
            {
                continue;
            }
            string path = Path.Combine(dir, program);
            if (File.Exists(path))
            {
                return path;
            }
        }
        return null;
    }

    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    /// <summary>Returns the tool's path, or null after printing why the test does not run
    /// (and failing the test when running in CI).</summary>
    public static string? Require(string program, ITestOutputHelper output, string package)
    {
        string? path = Find(program);
        if (path is null)
        {
            string reason = $"NOT RUN: {program} is not installed (Debian package {package}); .ci/run installs it";
            output.WriteLine(reason);
            if (InCi)
            {
                Assert.Fail(reason);
            }
        }
        return path;
    }
}
