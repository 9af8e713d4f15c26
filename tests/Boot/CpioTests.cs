using System.Diagnostics;
using System.Text;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Tcb.Boot;
using Xunit;
using Xunit.Abstractions;

namespace SecureVmm.Tests.Boot;

public sealed class CpioTests(ITestOutputHelper output)
{
    private static CpioNewcWriter Sample()
    {
        var cpio = new CpioNewcWriter();
        cpio.AddDirectory("dev");
        cpio.AddCharDevice("/dev/console", 5, 1);
        cpio.AddDirectory("bin");
        cpio.AddFile("bin/busybox", Encoding.ASCII.GetBytes("\x7F" + "ELF not really"), CpioNewcWriter.Octal(755));
        cpio.AddSymlink("bin/sh", "busybox");
        cpio.AddBlockDevice("dev/ram0", 1, 0, CpioNewcWriter.Octal(660));
        cpio.AddFile("init", "#!/bin/sh\nexec sh\n"u8.ToArray(), CpioNewcWriter.Octal(755));
        cpio.AddFile("empty", []);
        return cpio;
    }

    [Fact]
    public void Newc_archive_round_trips_through_the_reader()
    {
        var cpio = Sample();
        byte[] archive = cpio.ToArray();
        Assert.Equal("070701", Encoding.ASCII.GetString(archive, 0, 6));
        Assert.Equal(0, archive.Length % 4);
        var entries = CpioNewcReader.Read(archive);
        Assert.Equal(cpio.Entries.Count, entries.Count);
        for (int i = 0; i < entries.Count; i++)
        {
            Assert.Equal(cpio.Entries[i].Path, entries[i].Path);
            Assert.Equal(cpio.Entries[i].Type, entries[i].Type);
            Assert.Equal(cpio.Entries[i].Permissions, entries[i].Permissions);
            Assert.Equal(cpio.Entries[i].Data, entries[i].Data);
            Assert.Equal(cpio.Entries[i].DevMajor, entries[i].DevMajor);
            Assert.Equal(cpio.Entries[i].DevMinor, entries[i].DevMinor);
        }
        var console = entries.Single(e => e.Path == "dev/console");
        Assert.Equal((CpioEntryType.CharDevice, 5u, 1u, 0x180u), (console.Type, console.DevMajor, console.DevMinor, console.Permissions));
        Assert.Equal("busybox", Encoding.UTF8.GetString(entries.Single(e => e.Path == "bin/sh").Data));
        Assert.Contains("TRAILER!!!", Encoding.ASCII.GetString(archive), StringComparison.Ordinal);
    }

    [Fact]
    public void Header_fields_are_exactly_as_the_newc_format_says()
    {
        var cpio = new CpioNewcWriter { ModificationTime = 0x5F5E100 };
        cpio.AddFile("a", [0x41, 0x42, 0x43], CpioNewcWriter.Octal(644));
        string text = Encoding.ASCII.GetString(cpio.ToArray());
        // magic, ino 1, mode 0100644, uid 0, gid 0, nlink 1, mtime, size 3, dev 0/0, rdev 0/0, namesize 2, check 0;
        // 110 + 2 name bytes is already a multiple of 4, the 3 data bytes get one pad byte
        Assert.StartsWith("070701" + "00000001" + "000081A4" + "00000000" + "00000000" + "00000001" + "05F5E100" + "00000003"
            + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" + "a\0" + "ABC\0", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_paths_duplicates_and_octal_digits_are_refused()
    {
        var cpio = new CpioNewcWriter();
        cpio.AddDirectory("x");
        Assert.Throws<ArgumentException>(() => cpio.AddDirectory("/x/"));
        Assert.Throws<ArgumentException>(() => cpio.AddFile("../etc/passwd", []));
        Assert.Throws<ArgumentException>(() => cpio.AddFile("TRAILER!!!", []));
        Assert.Throws<ArgumentException>(() => cpio.AddFile("", []));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpioNewcWriter.Octal(758));
        Assert.Equal(0x1EDu, CpioNewcWriter.Octal(755));
    }

    [Fact]
    public void Reader_rejections_name_the_offset()
    {
        byte[] archive = Sample().ToArray();
        var noTrailer = Assert.Throws<BootImageException>(() => CpioNewcReader.Read(archive.AsSpan(0, 112)));
        Assert.Contains("name size", noTrailer.Message, StringComparison.Ordinal);
        var badMagic = (byte[])archive.Clone();
        badMagic[5] = (byte)'2';
        Assert.Equal(0, Assert.Throws<BootImageException>(() => CpioNewcReader.Read(badMagic)).Offset);
        var badHex = (byte[])archive.Clone();
        badHex[6 + 8] = (byte)'Z';
        Assert.Equal(14, Assert.Throws<BootImageException>(() => CpioNewcReader.Read(badHex)).Offset);
        Assert.Equal(0, Assert.Throws<BootImageException>(() => CpioNewcReader.Read([])).Offset);
    }

    [Fact]
    public void Random_entry_sets_round_trip()
    {
        var names = Gen.Elements("a", "b", "c", "d", "e", "f", "g", "h");
        var entry = from name in names
                    from kind in Gen.Choose(0, 3)
                    from size in Gen.Choose(0, 70)
                    from fill in Gen.Choose(0, 255)
                    select (name, kind, data: Enumerable.Repeat((byte)fill, size).ToArray());
        Prop.ForAll(Arb.From(Gen.ListOf(entry)), list =>
        {
            var cpio = new CpioNewcWriter();
            foreach (var (name, kind, data) in list.DistinctBy(e => e.name))
            {
                switch (kind)
                {
                    case 0: cpio.AddFile(name, data); break;
                    case 1: cpio.AddDirectory(name); break;
                    case 2: cpio.AddSymlink(name, "target-" + data.Length); break;
                    default: cpio.AddCharDevice(name, (uint)data.Length, 7); break;
                }
            }
            var back = CpioNewcReader.Read(cpio.ToArray());
            return back.Count == cpio.Entries.Count
                && back.Zip(cpio.Entries).All(p => p.First.Path == p.Second.Path && p.First.Mode == p.Second.Mode
                    && p.First.Data.SequenceEqual(p.Second.Data) && p.First.DevMajor == p.Second.DevMajor);
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(200));
    }

    [Fact]
    public void Host_cpio_lists_the_archive_when_installed()
    {
        string? cpioTool = FindOnPath("cpio");
        if (cpioTool is null)
        {
            output.WriteLine("SKIPPED (host check): no 'cpio' on PATH; the reader above checked the archive instead");
            return;
        }
        string file = Path.Combine(Path.GetTempPath(), $"securevmm-cpio-{Guid.NewGuid():N}.cpio");
        File.WriteAllBytes(file, Sample().ToArray());
        try
        {
            var psi = new ProcessStartInfo(cpioTool, "-t") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(psi)!;
            process.StandardInput.BaseStream.Write(File.ReadAllBytes(file));
            process.StandardInput.Close();
            string listing = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            Assert.Equal(0, process.ExitCode);
            Assert.Equal(["dev", "dev/console", "bin", "bin/busybox", "bin/sh", "dev/ram0", "init", "empty"],
                listing.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
        finally
        {
            File.Delete(file);
        }
    }

    internal static string? FindOnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, tool)).FirstOrDefault(File.Exists);
}
