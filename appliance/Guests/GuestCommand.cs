using System.CommandLine;
using SecureVmm.Policy.Guests;

namespace SecureVmm.Appliance.Guests;

/// <summary>`securevmm guest`: the project's own guest programs, written out as Multiboot images.</summary>
public static class GuestCommand
{
    public static Command Build()
    {
        var command = new Command("guest", "The project's own guest programs (Multiboot images built with Iced's assembler)");

        var list = new Command("list", "List the built-in guests");
        list.SetAction(parse =>
        {
            foreach (string name in ProjectGuests.Names)
            {
                parse.InvocationConfiguration.Output.WriteLine(name);
            }
            return Cli.ExitOk;
        });

        var name = new Argument<string>("NAME") { Description = "Guest name (see `securevmm guest list`)" };
        var output = new Option<FileInfo>("--output", "-o") { Description = "File to write the Multiboot image to", Required = true };
        var build = new Command("build", "Write a built-in guest as a Multiboot image (boots with `securevmm boot --unsigned` or `qemu-system-i386 -kernel`)")
        {
            name, output,
        };
        build.SetAction(parse =>
        {
            string guest = parse.GetValue(name)!;
            GuestImage? image = ProjectGuests.Build(guest);
            if (image is null)
            {
                parse.InvocationConfiguration.Error.WriteLine($"securevmm guest build: no guest named '{guest}'; known: {string.Join(", ", ProjectGuests.Names)}");
                return Cli.ExitUsage;
            }
            string path = parse.GetValue(output)!.FullName;
            try
            {
                File.WriteAllBytes(path, image.Bytes);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                parse.InvocationConfiguration.Error.WriteLine($"securevmm guest build: {path}: {e.Message}");
                return Cli.ExitUsage;
            }
            parse.InvocationConfiguration.Output.WriteLine($"{guest}: {image.Bytes.Length} bytes, loads at 0x{image.LoadAddress:X}, entry 0x{image.Entry:X} -> {path}");
            return Cli.ExitOk;
        });

        command.Subcommands.Add(list);
        command.Subcommands.Add(build);
        return command;
    }
}
