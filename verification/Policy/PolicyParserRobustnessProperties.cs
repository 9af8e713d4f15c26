using System.Text;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Verification.Policy;

/// <summary>
/// Hostile policy and manifest bytes never crash the checker: whatever the edit to a valid file
/// (bytes flipped, inserted or cut), the result is either a valid policy or a list of problems
/// each with a line and column, and for manifests an ImageException; never another exception.
/// </summary>
public class PolicyParserRobustnessProperties
{
    private static readonly byte[] Example = File.ReadAllBytes(Path.Combine(FindRepoRoot(), "guests-policy", "examples", "nettop-two-desktops.json"));

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SecureVmm.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("cannot find SecureVmm.sln above " + AppContext.BaseDirectory);
    }

    /// <summary>Bytes that JSON cares about, so edits often stay nearly-JSON and reach the deeper checks.</summary>
    private static readonly byte[] Interesting = Encoding.ASCII.GetBytes("{}[]\",:0123456789-.e truefalsenull\\/\n");

    private static Gen<byte[]> Edited(byte[] original) =>
        from edits in Gen.Choose(1, 4)
        from seed in ArbMap.Default.GeneratorFor<int>()
        select Edit(original, edits, seed);

    private static byte[] Edit(byte[] original, int edits, int seed)
    {
        var r = new Random(seed);
        var bytes = new List<byte>(original);
        for (int i = 0; i < edits && bytes.Count > 0; i++)
        {
            int at = r.Next(bytes.Count);
            byte value = r.Next(4) == 0 ? (byte)r.Next(256) : Interesting[r.Next(Interesting.Length)];
            switch (r.Next(3))
            {
                case 0:
                    bytes[at] = value;
                    break;
                case 1:
                    bytes.Insert(at, value);
                    break;
                default:
                    bytes.RemoveRange(at, Math.Min(r.Next(1, 40), bytes.Count - at));
                    break;
            }
        }
        return [.. bytes];
    }

    [Fact]
    public void EditedPoliciesGiveProblemsNotExceptions()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(PolicySoak.Tests(500)), Prop.ForAll(Arb.From(Edited(Example)), bytes =>
        {
            var result = PolicyLoader.Check(bytes, "edited.json", null);
            return result.Policy is not null
                ? result.Problems.Count == 0
                : result.Problems.Count > 0 && result.Problems.All(p => p.Line >= 1 && p.Column >= 1 && p.Message.Length > 0);
        }));
    }

    [Fact]
    public void EditedManifestsGiveImageExceptionsOnly()
    {
        byte[] manifest = ManifestRules.Serialize(ManifestRules.ToDocument(new ImageManifest("desk", 1, DateTimeOffset.UnixEpoch, ImageKind.Linux, false,
            "console=ttyS0", null, null, [new PayloadEntry(PayloadRole.Kernel, "vmlinuz", 10, new string('a', 64))])));
        ManifestRules.Parse(manifest, "m"); // the unedited manifest is valid
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(PolicySoak.Tests(500)), Prop.ForAll(Arb.From(Edited(manifest)), bytes =>
        {
            try
            {
                ManifestRules.Parse(bytes, "m");
                return true; // an edit may still be a valid manifest (e.g. a digit of the version); that is not a crash
            }
            catch (ImageException e)
            {
                return e.Message.Length > 0;
            }
        }));
    }
}
