using SecureVmm.Policy.Keys;
using SecureVmm.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Terminal;

/// <summary>
/// `securevmm run` with its consoles. The acceptance test: a signed two-VM policy inside a real
/// terminal (tmux, 160x48). Both VMs run the project's interactive guest on a serial console. The
/// test reads the screen as a person would: both labelled frames, one focus marker; what it types
/// appears only in the focused VM; Ctrl-A Tab moves the focus; Ctrl-A x stops everything with
/// status 0 and both audit logs verify.
/// </summary>
[Collection("PolicyConsole")]
public class RunConsoleTests(ITestOutputHelper output)
{
    private const int Width = 160, Height = 48, Half = Width / 2;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public void TwoLabelledVmsSideBySideAndKeysReachOnlyTheFocusedOne()
    {
        string? tmux = HostTools.Require("tmux", output, "tmux");
        if (tmux is null)
        {
            return;
        }
        string dir = Directory.CreateTempSubdirectory("svmm-console-test").FullName;
        try
        {
            string policy = SignedTwoVmPolicy(dir);
            string securevmm = Path.Combine(AppContext.BaseDirectory, "securevmm.dll");
            Assert.True(File.Exists(securevmm), $"{securevmm} is built with the tests (project reference)");
            string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
            string statusFile = Path.Combine(dir, "status");

            using var session = TmuxSession.Start(tmux, Width, Height,
                [dotnet, "exec", securevmm, "run", policy, "--policy-key", Path.Combine(dir, "admin.pub"), "--control", Path.Combine(dir, "control.sock")],
                dir, statusFile);

            // Both guests print their prompt inside their own frame.
            var (ready, screen) = session.WaitFor(s => Left(s).Contains("unclass> ", StringComparison.Ordinal) &&
                Right(s).Contains("unclass> ", StringComparison.Ordinal), Patience);
            Show("after boot", screen);
            Assert.True(ready, "both prompts within " + Patience);
            Assert.Contains("▶ FOCUS · 1 SECRET · secret-vm", screen[0][..Half], StringComparison.Ordinal);
            Assert.Contains("2 UNCLASSIFIED · public-vm", screen[0][Half..], StringComparison.Ordinal);
            Assert.DoesNotContain("FOCUS", screen[0][Half..], StringComparison.Ordinal);
            Assert.Equal(1, Panes(screen).Sum(row => Count(row, "FOCUS")));
            Assert.Contains(screen, row => row.StartsWith("▶ 1 SECRET · secret-vm", StringComparison.Ordinal));

            // Typing reaches the focused VM (the SECRET one) only.
            session.Type("abc");
            session.Keys("Enter");
            (bool echoed, screen) = session.WaitFor(s => Left(s).Contains("you typed: abc", StringComparison.Ordinal), Patience);
            Show("after abc", screen);
            Assert.True(echoed, "the focused VM answered");
            Assert.DoesNotContain("abc", Right(screen), StringComparison.Ordinal);

            // Ctrl-A Tab moves the focus, visibly.
            session.Keys("C-a", "Tab");
            (bool moved, screen) = session.WaitFor(s => s[0][Half..].Contains("▶ FOCUS · 2 UNCLASSIFIED · public-vm", StringComparison.Ordinal), Patience);
            Assert.True(moved, "the focus marker moved to the second pane");
            Assert.DoesNotContain("FOCUS", screen[0][..Half], StringComparison.Ordinal);

            session.Type("xyz");
            session.Keys("Enter");
            (echoed, screen) = session.WaitFor(s => Right(s).Contains("you typed: xyz", StringComparison.Ordinal), Patience);
            Show("after xyz", screen);
            Assert.True(echoed, "the newly focused VM answered");
            Assert.DoesNotContain("xyz", Left(screen), StringComparison.Ordinal);
            Assert.Contains("you typed: abc", Left(screen), StringComparison.Ordinal);

            // Ctrl-A x stops both VMs; the command ends with status 0.
            session.Keys("C-a", "x");
            string? status = WaitForFile(statusFile, Patience);
            Assert.Equal("0", status?.Trim());
            VerifyAudits(dir);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Without a terminal (`--console lines`), each VM's serial lines come out whole, prefixed by its label.</summary>
    [Fact]
    public void LinesModePrefixesEveryLineWithTheVmsLabel()
    {
        string dir = Directory.CreateTempSubdirectory("svmm-console-test").FullName;
        try
        {
            string policy = SignedTwoVmPolicy(dir);
            var (status, stdout, stderr) = CliRunner.Run("run", policy, "--policy-key", Path.Combine(dir, "admin.pub"),
                "--control", Path.Combine(dir, "control.sock"), "--console", "lines", "--seconds", "1");
            Assert.True(status == 0, stderr);
            string[] lines = stdout.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Contains("[SECRET secret-vm] SecureVmm interactive guest. Type a line and press Enter.", lines);
            Assert.Contains("[UNCLASSIFIED public-vm] SecureVmm interactive guest. Type a line and press Enter.", lines);
            // The prompts (unfinished lines) are written when the log closes.
            Assert.Contains("[SECRET secret-vm] unclass> ", lines);
            Assert.Contains("[UNCLASSIFIED public-vm] unclass> ", lines);
            Assert.All(lines, l => Assert.Matches(@"^\[(SECRET secret-vm|UNCLASSIFIED public-vm)\] ", l));
            VerifyAudits(dir);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private void VerifyAudits(string dir)
    {
        foreach (string vm in new[] { "secret-vm", "public-vm" })
        {
            string log = Path.Combine(dir, "audit", vm + ".audit");
            Assert.True(File.Exists(log), $"{log} was written");
            var (status, stdout, stderr) = CliRunner.Run("audit", "verify", log);
            output.WriteLine($"audit verify {vm}: {status}\n{stdout}{stderr}");
            Assert.True(status == 0, $"audit log of {vm}: {stdout}{stderr}");
        }
    }

    /// <summary>Keys, two signed images of the interactive guest, and a signed policy, all made with the CLI.</summary>
    private static string SignedTwoVmPolicy(string dir)
    {
        string In(string name) => Path.Combine(dir, name);
        void Cli(params string[] args)
        {
            var (status, stdout, stderr) = CliRunner.Run(args);
            Assert.True(status == 0, $"securevmm {string.Join(' ', args)}: {stdout}{stderr}");
        }

        Cli("keygen", "--out", In("admin"));
        Cli("keygen", "--out", In("signer"));
        Cli("guest", "build", "interactive", "-o", In("interactive.elf"));
        Directory.CreateDirectory(In("images"));
        foreach (string vm in new[] { "secret-vm", "public-vm" })
        {
            Cli("image", "pack", "--out", In($"images/{vm}.svmi"), "--name", vm, "--image-version", "1", "--kind", "multiboot",
                "--kernel", In("interactive.elf"));
            Cli("image", "sign", In($"images/{vm}.svmi"), "--key", In("signer.key"));
        }
        string publicKey = Convert.ToBase64String(KeyFiles.ReadPublic(In("signer.pub")).Bytes);
        string policy = In("policy.json");
        File.WriteAllText(policy, $$"""
            {
              "formatVersion": 1,
              "appliance": "console test",
              "host": { "memoryBudgetMiB": 64 },
              "rollbackStateFile": "state/rollback-state.json",
              "trustAnchors": [ { "id": "test", "publicKey": "{{publicKey}}", "maySignFor": ["secret-vm", "public-vm"] } ],
              "networks": [
                { "name": "secret-net", "label": { "level": "SECRET", "colour": "red" }, "backend": { "type": "none" }, "mac": "02:00:00:00:20:01" },
                { "name": "public-net", "label": { "level": "UNCLASSIFIED", "colour": "green" }, "backend": { "type": "none" }, "mac": "02:00:00:00:20:02" }
              ],
              "vms": [
                { "name": "secret-vm", "label": { "level": "SECRET", "colour": "red" }, "memoryMiB": 16,
                  "image": { "path": "images/secret-vm.svmi", "name": "secret-vm", "signers": ["test"] },
                  "network": "secret-net", "devices": ["serial"], "console": "serial", "clock": "deterministic",
                  "audit": { "path": "audit/secret-vm.audit" } },
                { "name": "public-vm", "label": { "level": "UNCLASSIFIED", "colour": "green" }, "memoryMiB": 16,
                  "image": { "path": "images/public-vm.svmi", "name": "public-vm", "signers": ["test"] },
                  "network": "public-net", "devices": ["serial"], "console": "serial", "clock": "deterministic",
                  "audit": { "path": "audit/public-vm.audit" } }
              ]
            }
            """);
        Cli("policy", "sign", policy, "--key", In("admin.key"));
        return policy;
    }

    /// <summary>The rows of the pane area (above the status rows), and each half of it: the two frames side by side.</summary>
    private static IEnumerable<string> Panes(string[] screen) =>
        screen.TakeWhile(row => !row.StartsWith("▶ 1 ", StringComparison.Ordinal) && !row.StartsWith("  1 ", StringComparison.Ordinal));

    private static string Left(string[] screen) => string.Join('\n', Panes(screen).Select(r => r[..Half]));

    private static string Right(string[] screen) => string.Join('\n', Panes(screen).Select(r => r[Half..]));

    private static int Count(string text, string what) => (text.Length - text.Replace(what, "", StringComparison.Ordinal).Length) / what.Length;

    private void Show(string when, string[] screen)
    {
        output.WriteLine($"--- screen {when} ---");
        foreach (string row in screen)
        {
            output.WriteLine(row.TrimEnd());
        }
    }

    private static string? WaitForFile(string path, TimeSpan timeout)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (File.Exists(path))
            {
                string text = File.ReadAllText(path);
                if (text.EndsWith('\n'))
                {
                    return text;
                }
            }
            Thread.Sleep(100);
        }
        return null;
    }
}
