using System.Diagnostics;
using SecureVmm.Tcb.Audit;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Audit;

/// <summary>
/// A writer process killed mid-run (SIGKILL: no close, no final checkpoint) leaves a log whose
/// complete blocks verify and whose end the verifier reports as a truncated tail, never as clean.
/// The child is the bench's soak writer (`SecureVmm.Bench audit --soak FILE`), which appends records
/// continuously with a 10 ms flush interval.
/// </summary>
public class AuditCrashTests(ITestOutputHelper output)
{
    [Fact]
    public void KilledWriterLeavesAVerifiableLogWithATruncatedTail()
    {
        string bench = Path.Combine(AppContext.BaseDirectory, "SecureVmm.Bench.dll");
        Assert.True(File.Exists(bench), $"{bench} is built with the tests (project reference)");
        string path = Path.Combine(Path.GetTempPath(), $"securevmm-audit-crash-{Guid.NewGuid():N}.log");
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        var start = new ProcessStartInfo(dotnet) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(bench);
        start.ArgumentList.Add("audit");
        start.ArgumentList.Add("--soak");
        start.ArgumentList.Add(path);
        start.ArgumentList.Add("60");
        Process? running = null;
        try
        {
            Process child = Process.Start(start)!;
            running = child;
            var watch = Stopwatch.StartNew();
            while (watch.Elapsed < TimeSpan.FromSeconds(30) && !child.HasExited && (!File.Exists(path) || new FileInfo(path).Length < 300_000))
            {
                Thread.Sleep(20);
            }
            if (child.HasExited)
            {
                Assert.Fail($"the soak writer exited early ({child.ExitCode}): {child.StandardError.ReadToEnd()}");
            }
            output.WriteLine($"killing pid {child.Id} after {watch.ElapsedMilliseconds} ms at {new FileInfo(path).Length} bytes");
            child.Kill(entireProcessTree: true);
            child.WaitForExit();
            output.WriteLine($"exited after {watch.ElapsedMilliseconds} ms, status {child.ExitCode}");

            long size = new FileInfo(path).Length;
            AuditVerifyResult result = AuditLogVerifier.VerifyFile(path, null);
            output.WriteLine($"killed at {size} bytes: {result.Problem?.Message}; {result.Records} records in {result.Blocks} complete blocks verify");
            Assert.False(result.Ok);
            Assert.Equal(AuditProblemKind.Truncated, result.Problem!.Kind);
            Assert.Contains("truncated after block", result.Problem.Message, StringComparison.Ordinal);
            Assert.Contains($"sequence {result.LastSequence}", result.Problem.Message, StringComparison.Ordinal);
            Assert.True(result.Records > 1000);
            Assert.True(result.Checkpoints > 0);
            // Everything but a partial last block verified.
            Assert.True(size - result.VerifiedBytes < AuditFormat.BlockHeaderSize + AuditFormat.DefaultMaxBlockPayloadBytes);
        }
        finally
        {
            if (running is not null)
            {
                if (!running.HasExited)
                {
                    // An assertion failed before the kill: do not leave the writer running.
                    running.Kill(entireProcessTree: true);
                    running.WaitForExit();
                }
                running.Dispose();
            }
            File.Delete(path);
        }
    }
}
