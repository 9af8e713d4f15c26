using System.CommandLine;
using SecureVmm.Appliance.Policy;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Appliance.Keys;

/// <summary>`securevmm keygen --out PREFIX`: a new Ed25519 key pair as PREFIX.key (owner-only) and PREFIX.pub.</summary>
internal static class KeygenCommand
{
    public static Command Build()
    {
        var output = new Option<string>("--out", "-o")
        {
            HelpName = "PREFIX",
            Description = "Path prefix: writes PREFIX.key (secret, mode 0600) and PREFIX.pub (public)",
            Required = true,
        };
        var command = new Command("keygen", "Generate an Ed25519 key pair for signing images or policies") { output };
        command.SetAction(parse => CommandBoundary.Run(() =>
        {
            string prefix = parse.GetValue(output)!;
            string secretPath = prefix + ".key", publicPath = prefix + ".pub";
            foreach (var path in new[] { secretPath, publicPath })
            {
                if (File.Exists(path))
                {
                    throw new UsageException($"{path} already exists; refusing to overwrite a key");
                }
            }
            var key = Ed25519SecretKey.Generate();
            KeyFiles.WriteSecret(secretPath, key);
            KeyFiles.WritePublic(publicPath, key.PublicKey);
            Console.Out.WriteLine($"key {key.Id}");
            Console.Out.WriteLine($"  secret: {secretPath} (keep it offline; anyone holding it can sign)");
            Console.Out.WriteLine($"  public: {publicPath}");
            Console.Out.WriteLine($"  for a policy trust anchor: \"publicKey\": \"{Convert.ToBase64String(key.PublicKey.Bytes)}\", \"keyId\": \"{key.Id}\"");
            return Cli.ExitOk;
        }));
        return command;
    }
}
