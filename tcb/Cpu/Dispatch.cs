using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// The dispatch table: one handler per Iced Code (the decoded opcode form), filled by each
// instruction-group file's Register* method. A Code with no handler raises #UD (SDM vol. 2,
// UD2 / "invalid opcode"), so anything not implemented is a clean guest fault, never a crash.
public sealed partial class Cpu
{
    private static readonly int CodeCount = Enum.GetValues<Code>().Length;
    private static readonly InsnHandler?[] s_handlers = new InsnHandler?[CodeCount];
    private static readonly byte[] s_aux = new byte[CodeCount];
    private static readonly InsnHandler s_undefined = Undefined;
    private static readonly bool[] s_endsBlock = new bool[CodeCount];
    // Iced's fixed operand size of each Code in bits (0 = by code size), read at run time by
    // handlers such as CALL/RET/PUSH imm; a table so that no handler walks Iced's OpCodeInfo.
    private static readonly byte[] s_operandSizeBits = BuildOperandSizeTable();

    private static byte[] BuildOperandSizeTable()
    {
        var table = new byte[CodeCount];
        foreach (var code in Enum.GetValues<Code>())
        {
            table[(int)code] = (byte)code.ToOpCode().OperandSize;
        }
        return table;
    }

    static Cpu()
    {
        RegisterArithmetic();
        RegisterLogic();
        RegisterShifts();
        RegisterBits();
        RegisterDataTransfer();
        RegisterStrings();
        RegisterControlTransfer();
        RegisterSegments();
        RegisterSystem();
        RegisterIo();
        RegisterX87Gate();
        RegisterFastPaths();
    }

    private static bool EndsBlock(Code code) => s_endsBlock[(int)code];

    /// <summary>Registers a handler for one opcode form.</summary>
    private static void On(Code code, InsnHandler handler, byte aux = 0, bool endsBlock = false)
    {
        s_handlers[(int)code] = handler;
        s_aux[(int)code] = aux;
        s_endsBlock[(int)code] = endsBlock;
    }

    /// <summary>Registers a handler for every legacy-encoded 16/32-bit form of a mnemonic.</summary>
    private static void On(Mnemonic mnemonic, InsnHandler handler, byte aux = 0, bool endsBlock = false)
    {
        foreach (var code in s_codesByMnemonic.Value[(int)mnemonic])
        {
            On(code, handler, aux, endsBlock);
        }
    }

    private static readonly Lazy<List<Code>[]> s_codesByMnemonic = new(() =>
    {
        var lists = new List<Code>[Enum.GetValues<Mnemonic>().Length];
        for (int i = 0; i < lists.Length; i++)
        {
            lists[i] = [];
        }
        foreach (var code in Enum.GetValues<Code>())
        {
            var info = code.ToOpCode();
            if (info.Encoding != EncodingKind.Legacy || (!info.Mode16 && !info.Mode32))
            {
                continue;
            }
            lists[(int)code.Mnemonic()].Add(code);
        }
        return lists;
    });

    private static void Undefined(Cpu c, ref DecodedInsn d) => c.Fault(Vector.UD);
}
