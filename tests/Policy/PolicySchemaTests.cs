using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Tests.Policy;

/// <summary>docs/policy.schema.json names exactly the fields the parser accepts, object by object.</summary>
public class PolicySchemaTests
{
    private static readonly JsonElement Schema = JsonDocument.Parse(File.ReadAllText(Path.Combine(PolicyFixture.RepoRoot, "docs", "policy.schema.json"))).RootElement;

    private static HashSet<string> SchemaFields(JsonElement node) =>
        [.. node.GetProperty("properties").EnumerateObject().Select(p => p.Name)];

    private static HashSet<string> ParserFields(Type type) =>
        [.. PolicyJsonContext.Default.GetTypeInfo(type)!.Properties.Select(p => p.Name)];

    private static JsonElement Items(JsonElement node, string field) => node.GetProperty("properties").GetProperty(field).GetProperty("items");

    [Fact]
    public void SchemaAndParserAgreeOnEveryObject()
    {
        var vm = Items(Schema, "vms");
        var network = Items(Schema, "networks");
        var defs = Schema.GetProperty("$defs");
        var pairs = new (JsonElement Node, Type Type)[]
        {
            (Schema, typeof(PolicyDocument)),
            (Schema.GetProperty("properties").GetProperty("host"), typeof(HostDocument)),
            (Items(Schema, "trustAnchors"), typeof(TrustAnchorDocument)),
            (network, typeof(NetworkDocument)),
            (network.GetProperty("properties").GetProperty("filter"), typeof(FilterDocument)),
            (defs.GetProperty("rule"), typeof(FilterRuleDocument)),
            (defs.GetProperty("rule").GetProperty("properties").GetProperty("rateLimit"), typeof(RateLimitDocument)),
            (defs.GetProperty("label"), typeof(LabelDocument)),
            (vm, typeof(VmDocument)),
            (vm.GetProperty("properties").GetProperty("image"), typeof(ImageReferenceDocument)),
            (vm.GetProperty("properties").GetProperty("audit"), typeof(AuditDocument)),
            (Items(vm, "storage"), typeof(StorageDocument)),
        };
        foreach (var (node, type) in pairs)
        {
            Assert.True(SchemaFields(node).SetEquals(ParserFields(type)),
                $"{type.Name}: schema [{string.Join(", ", SchemaFields(node))}] vs parser [{string.Join(", ", ParserFields(type))}]");
        }
        var backendFields = defs.GetProperty("backend").GetProperty("oneOf").EnumerateArray().SelectMany(SchemaFields).ToHashSet();
        Assert.True(backendFields.SetEquals(ParserFields(typeof(BackendDocument))));
    }

    [Fact]
    public void SchemaEnumerationsMatchThePolicyTables()
    {
        var label = Schema.GetProperty("$defs").GetProperty("label").GetProperty("properties");
        Assert.Equal(PolicyNames.Levels.Keys.Order(), label.GetProperty("level").GetProperty("enum").EnumerateArray().Select(e => e.GetString()!).Order());
        Assert.Equal(PolicyNames.Colours.Keys.Order(), label.GetProperty("colour").GetProperty("enum").EnumerateArray().Select(e => e.GetString()!).Order());
        var devices = Items(Schema, "vms").GetProperty("properties").GetProperty("devices").GetProperty("items").GetProperty("enum");
        Assert.Equal(PolicyNames.Devices.Keys.Order(), devices.EnumerateArray().Select(e => e.GetString()!).Order());
    }
}
