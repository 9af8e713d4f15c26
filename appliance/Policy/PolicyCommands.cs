using System.CommandLine;
using SecureVmm.Appliance.Images;
using SecureVmm.Appliance.Keys;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using Spectre.Console;

namespace SecureVmm.Appliance.Policy;

/// <summary>`securevmm policy check | sign`, and registration of the key and image commands.</summary>
public static class PolicyCommands
{
    /// <summary>Adds `keygen`, `image` and `policy` to the root command.</summary>
    public static void AddTo(RootCommand root)
    {
        root.Subcommands.Add(KeygenCommand.Build());
        root.Subcommands.Add(ImageCommands.Build());
        root.Subcommands.Add(Build());
    }

    private static Command Build()
    {
        var policy = new Command("policy", "Check and sign the appliance policy");
        policy.Subcommands.Add(Check());
        policy.Subcommands.Add(Sign());
        return policy;
    }

    private static Command Check()
    {
        var file = new Argument<string>("POLICY") { Description = "Policy file (JSON, docs/policy.md)" };
        var key = new Option<string?>("--policy-key") { HelpName = "FILE", Description = "Administrator public key or trust file (several keys): also verify POLICY.sig" };
        var signature = new Option<string?>("--signature") { HelpName = "FILE", Description = "Signature file (default POLICY.sig)" };
        var images = new Option<bool>("--images") { Description = "Also verify every VM's image against its signers, name and sealing" };
        var command = new Command("check", "Validate a policy: print every problem, or a summary of what it will run")
        {
            file, key, signature, images,
        };
        command.SetAction(parse => CommandBoundary.Run(() =>
        {
            string path = parse.GetValue(file)!;
            byte[] bytes = PolicyLoader.ReadBytes(path);
            string? adminKeyId = null;
            if (parse.GetValue(key) is { } keyPath)
            {
                var adminKeys = KeyFiles.ReadTrustFile(keyPath);
                string signaturePath = parse.GetValue(signature) ?? PolicySignature.DefaultPath(path);
                if (!File.Exists(signaturePath))
                {
                    throw new PolicyException(PolicyErrorCode.MissingSignature, $"{signaturePath}: no signature for {path}; sign it with 'securevmm policy sign'");
                }
                adminKeyId = PolicySignature.Verify(bytes, path, File.ReadAllText(signaturePath), signaturePath, adminKeys).Id;
            }
            var result = PolicyLoader.Check(bytes, path, adminKeyId);
            if (result.Policy is null)
            {
                Console.Error.WriteLine($"securevmm: invalid policy: {path}: {result.Problems.Count} problem{(result.Problems.Count == 1 ? "" : "s")}");
                foreach (var problem in result.Problems)
                {
                    Console.Error.WriteLine("  " + problem);
                }
                return Cli.ExitUsage;
            }
            if (parse.GetValue(images))
            {
                foreach (var vm in result.Policy.Vms)
                {
                    var image = ImageLoader.LoadVerified(vm, null);
                    Console.Out.WriteLine($"image for {vm.Name}: '{image.Name}' version {image.Version} signed by {image.SignerKeyId}, manifest sha256 {image.ManifestSha256}");
                }
            }
            PrintSummary(result.Policy);
            return Cli.ExitOk;
        }));
        return command;
    }

    private static void PrintSummary(ValidatedPolicy policy)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Out),
            Ansi = Console.IsOutputRedirected ? AnsiSupport.No : AnsiSupport.Detect,
            ColorSystem = Console.IsOutputRedirected ? ColorSystemSupport.NoColors : ColorSystemSupport.Detect,
        });
        if (Console.IsOutputRedirected)
        {
            console.Profile.Width = 160;
        }
        Console.Out.WriteLine($"policy {policy.SourcePath}: OK (appliance \"{policy.ApplianceName}\", sha256 {policy.Sha256}" +
            (policy.AdminKeyId is null ? ", signature not checked)" : $", signed by administrator key {policy.AdminKeyId})"));
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var header in new[] { "VM", "Label", "Memory", "Image", "Signer", "Network", "Backend", "Console", "Clock" })
        {
            table.AddColumn(header);
        }
        foreach (var vm in policy.Vms)
        {
            table.AddRow(
                Markup.Escape(vm.Name),
                Markup.Escape(vm.Label.ToString()),
                $"{vm.MemoryMiB} MiB",
                Markup.Escape($"{vm.Image.Name}{(vm.Image.Sealed ? " (sealed)" : "")}"),
                Markup.Escape(string.Join(", ", vm.Image.Signers.Select(s => $"{s.Id} ({s.Key.Id})"))),
                Markup.Escape($"{vm.Network.Name} {vm.Network.MacText}"),
                Markup.Escape(vm.Network.Backend.Describe()),
                PolicyNames.Console(vm.Console),
                PolicyNames.Clock(vm.Clock));
        }
        console.Write(table);
        int used = policy.Vms.Sum(v => v.MemoryMiB + v.Storage.Where(s => s.Kind == StorageKind.Ephemeral).Sum(s => s.SizeMiB));
        Console.Out.WriteLine($"memory: {used} of {policy.MemoryBudgetMiB} MiB budget; rollback state: {policy.RollbackStateFile}");
    }

    private static Command Sign()
    {
        var file = new Argument<string>("POLICY") { Description = "Policy file to sign" };
        var key = new Option<string>("--key", "-k") { HelpName = "FILE", Description = "Administrator secret key file", Required = true };
        var signature = new Option<string?>("--signature") { HelpName = "FILE", Description = "Signature file to write (default POLICY.sig)" };
        var command = new Command("sign", "Write the detached administrator signature of a valid policy") { file, key, signature };
        command.SetAction(parse => CommandBoundary.Run(() =>
        {
            string path = parse.GetValue(file)!;
            var secret = KeyFiles.ReadSecret(parse.GetValue(key)!);
            byte[] bytes = PolicyLoader.ReadBytes(path);
            // Sign only what would load: a signature must never make a broken policy look approved.
            var result = PolicyLoader.Check(bytes, path, secret.Id);
            if (result.Policy is null)
            {
                Console.Error.WriteLine($"securevmm: invalid policy: {path}: not signing; {result.Problems.Count} problem{(result.Problems.Count == 1 ? "" : "s")}");
                foreach (var problem in result.Problems)
                {
                    Console.Error.WriteLine("  " + problem);
                }
                return Cli.ExitUsage;
            }
            string signaturePath = parse.GetValue(signature) ?? PolicySignature.DefaultPath(path);
            File.WriteAllText(signaturePath, PolicySignature.Create(bytes, secret));
            Console.Out.WriteLine($"{signaturePath}: policy sha256 {result.Policy.Sha256} signed by administrator key {secret.Id}");
            return Cli.ExitOk;
        }));
        return command;
    }
}
