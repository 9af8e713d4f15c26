using System.CommandLine;
using System.Globalization;
using SecureVmm.Appliance.Policy;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Appliance.Images;

/// <summary>`securevmm image pack | sign | verify` (docs/image-format.md).</summary>
internal static class ImageCommands
{
    public static Command Build()
    {
        var image = new Command("image", "Make, sign and verify signed VM images");
        image.Subcommands.Add(Pack());
        image.Subcommands.Add(Sign());
        image.Subcommands.Add(Verify());
        return image;
    }

    private static Command Pack()
    {
        var output = new Option<string>("--out", "-o") { HelpName = "FILE", Description = "Image file to write", Required = true };
        var name = new Option<string>("--name") { HelpName = "NAME", Description = "Image name (the policy's image.name must match)", Required = true };
        var version = new Option<ulong>("--image-version") { HelpName = "N", Description = "Version: a whole number, higher for newer images (rollback protection compares it)", Required = true };
        var kind = new Option<string>("--kind") { Description = "multiboot | linux | flat", Required = true };
        kind.AcceptOnlyFromAmong("multiboot", "linux", "flat");
        var kernel = new Option<string>("--kernel") { HelpName = "FILE", Description = "Kernel file (Multiboot ELF32, bzImage or flat binary)", Required = true };
        var initrd = new Option<string?>("--initrd") { HelpName = "FILE", Description = "Initial ramdisk (linux and multiboot kinds)" };
        var cmdline = new Option<string>("--cmdline") { HelpName = "TEXT", Description = "Kernel command line", DefaultValueFactory = _ => "" };
        var isSealed = new Option<bool>("--sealed") { Description = "Mark the image sealed: read-only payload, no persistent writable storage" };
        var load = new Option<string?>("--load-address") { HelpName = "ADDRESS", Description = "Flat images: guest-physical load address (decimal or 0x hex)" };
        var entry = new Option<string?>("--entry") { HelpName = "ADDRESS", Description = "Flat images: entry point (decimal or 0x hex)" };
        var command = new Command("pack", "Make an unsigned image (manifest + payloads) from files")
        {
            output, name, version, kind, kernel, initrd, cmdline, isSealed, load, entry,
        };
        command.SetAction(parse => CommandBoundary.Run(() =>
        {
            var imageKind = ManifestRules.Kinds[parse.GetValue(kind)!];
            var inputs = new List<ImageBundle.PackInput> { new(PayloadRole.Kernel, parse.GetValue(kernel)!) };
            if (parse.GetValue(initrd) is { } initrdPath)
            {
                inputs.Add(new ImageBundle.PackInput(PayloadRole.Initrd, initrdPath));
            }
            uint? loadAddress = ParseAddress(parse.GetValue(load), "--load-address");
            uint? entryPoint = ParseAddress(parse.GetValue(entry), "--entry");
            if (imageKind != ImageKind.Flat && (loadAddress is not null || entryPoint is not null))
            {
                throw new UsageException("--load-address and --entry apply to --kind flat only");
            }
            string outPath = parse.GetValue(output)!;
            var manifest = ImageBundle.Pack(outPath, parse.GetValue(name)!, parse.GetValue(version), imageKind, parse.GetValue(isSealed),
                parse.GetValue(cmdline) ?? "", loadAddress, entryPoint, inputs, DateTimeOffset.UtcNow);
            Console.Out.WriteLine($"{outPath}: image '{manifest.Name}' version {manifest.Version} ({ManifestRules.KindName(manifest.Kind)}{(manifest.Sealed ? ", sealed" : "")}), unsigned");
            foreach (var p in manifest.Payloads)
            {
                Console.Out.WriteLine($"  {ManifestRules.RoleName(p.Role),-6} {p.Name}  {p.Size} bytes  sha256 {p.Sha256}");
            }
            Console.Out.WriteLine("next: securevmm image sign " + outPath + " --key KEY.key");
            return Cli.ExitOk;
        }));
        return command;
    }

    private static uint? ParseAddress(string? text, string option)
    {
        if (text is null)
        {
            return null;
        }
        bool ok = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? uint.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint value)
            : uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        return ok ? value : throw new UsageException($"{option}: \"{text}\" is not a 32-bit address (decimal or 0x hex)");
    }

    private static Command Sign()
    {
        var file = new Argument<string>("IMAGE") { Description = "Image file to sign (signature added in place)" };
        var key = new Option<string>("--key", "-k") { HelpName = "FILE", Description = "Secret key file (from securevmm keygen)", Required = true };
        var command = new Command("sign", "Add a detached Ed25519 signature over the image's manifest") { file, key };
        command.SetAction(parse => CommandBoundary.Run(() =>
        {
            var secret = KeyFiles.ReadSecret(parse.GetValue(key)!);
            string path = parse.GetValue(file)!;
            var manifest = ImageBundle.Sign(path, secret);
            Console.Out.WriteLine($"{path}: image '{manifest.Name}' version {manifest.Version} signed by key {secret.Id}");
            return Cli.ExitOk;
        }));
        return command;
    }

    private static Command Verify()
    {
        var file = new Argument<string>("IMAGE") { Description = "Image file to verify" };
        var keys = new Option<string[]>("--key", "-k")
        {
            HelpName = "FILE",
            Description = "Trusted public key file or trust file (repeat for several)",
            Required = true,
            AllowMultipleArgumentsPerToken = false,
        };
        var name = new Option<string?>("--name") { HelpName = "NAME", Description = "Require this image name" };
        var command = new Command("verify", "Check an image's signature, payload sizes and hashes; print signer and digests") { file, keys, name };
        command.SetAction(parse => CommandBoundary.Run(() =>
        {
            var trusted = parse.GetValue(keys)!.SelectMany(KeyFiles.ReadTrustFile).ToList();
            string path = parse.GetValue(file)!;
            var image = ImageLoader.LoadVerified(path, trusted, null, null, parse.GetValue(name));
            var m = image.Manifest;
            Console.Out.WriteLine($"{path}: OK");
            Console.Out.WriteLine($"  name:     {m.Name}");
            Console.Out.WriteLine($"  version:  {m.Version}");
            Console.Out.WriteLine($"  kind:     {ManifestRules.KindName(m.Kind)}" +
                (m.Kind == ImageKind.Flat ? $" (load 0x{m.LoadAddress:x8}, entry 0x{m.Entry:x8})" : ""));
            Console.Out.WriteLine($"  sealed:   {(m.Sealed ? "yes" : "no")}");
            Console.Out.WriteLine($"  created:  {m.Created.UtcDateTime.ToString(ManifestRules.CreatedFormat, CultureInfo.InvariantCulture)}");
            Console.Out.WriteLine($"  cmdline:  {m.CommandLine}");
            Console.Out.WriteLine($"  signer:   {image.SignerKeyId}");
            Console.Out.WriteLine($"  manifest: sha256 {image.ManifestSha256}");
            foreach (var p in image.Payloads)
            {
                Console.Out.WriteLine($"  {ManifestRules.RoleName(p.Role) + ":",-9} {p.Name}  {p.Bytes.Length} bytes  sha256 {p.Sha256}");
            }
            return Cli.ExitOk;
        }));
        return command;
    }
}
