using System.Diagnostics;
using System.Text;

namespace SecureVmm.Tests.Support;

/// <summary>Runs a Multiboot image on qemu-system-i386 (TCG) with COM1 on stdio and the
/// isa-debug-exit device at 0xF4, capturing serial output. Bounded in time; always killed.</summary>
public static class QemuRunner
{
    public sealed record Result(int? ExitCode, string Serial, bool TimedOut);

    public static Result Run(string qemu, byte[] image, TimeSpan timeout, string? input = null,
        string? sendInputAfter = null, string? stopWhen = null)
    {
        string dir = Directory.CreateTempSubdirectory("svmm-qemu").FullName;
        try
        {
            string kernel = Path.Combine(dir, "guest.bin");
            File.WriteAllBytes(kernel, image);
            var psi = new ProcessStartInfo(qemu)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string arg in new[]
            {
                "-accel", "tcg", "-m", "64", "-display", "none", "-monitor", "none", "-serial", "stdio",
                "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", kernel,
            })
            {
                psi.ArgumentList.Add(arg);
            }
            using var process = Process.Start(psi)!;
            var serial = new StringBuilder();
            var inputSent = input is null;
            var reader = new Thread(() =>
            {
                var buffer = new char[256];
                int n;
                while ((n = process.StandardOutput.Read(buffer, 0, buffer.Length)) > 0)
                {
                    lock (serial)
                    {
                        serial.Append(buffer, 0, n);
                    }
                }
            }) { IsBackground = true };
            reader.Start();
            var clock = Stopwatch.StartNew();
            bool timedOut = true;
            while (clock.Elapsed < timeout)
            {
                if (process.WaitForExit(50))
                {
                    timedOut = false;
                    break;
                }
                string text;
                lock (serial)
                {
                    text = serial.ToString();
                }
                if (!inputSent && (sendInputAfter is null || text.Contains(sendInputAfter, StringComparison.Ordinal)))
                {
                    process.StandardInput.Write(input);
                    process.StandardInput.Flush();
                    inputSent = true;
                }
                if (stopWhen is not null && text.Contains(stopWhen, StringComparison.Ordinal))
                {
                    timedOut = false;
                    break;
                }
            }
            int? exitCode = null;
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit();
            }
            else
            {
                exitCode = process.ExitCode;
            }
            reader.Join(2000);
            lock (serial)
            {
                return new Result(exitCode, serial.ToString(), timedOut);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
