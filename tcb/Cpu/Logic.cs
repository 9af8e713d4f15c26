using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// Logical instructions (SDM vol. 1, 7.3.3; vol. 2 AND/OR/XOR/TEST/NOT): OF and CF cleared,
// SF/ZF/PF from the result; AF is undefined and this model clears it, as QEMU does.
public sealed partial class Cpu
{
    private static void RegisterLogic()
    {
        On(Mnemonic.And, (c, ref d) => And(c, ref d));
        On(Mnemonic.Or, (c, ref d) => Or(c, ref d));
        On(Mnemonic.Xor, (c, ref d) => Xor(c, ref d));
        On(Mnemonic.Test, (c, ref d) => Test(c, ref d));
        On(Mnemonic.Not, (c, ref d) => Not(c, ref d));
    }

    private static void And(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a & b;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsLogic(r, d.OpSize);
    }

    private static void Or(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a | b;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsLogic(r, d.OpSize);
    }

    private static void Xor(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        uint r = a ^ b;
        c.WriteOp0(ref d, r);
        if (c.Faulted) return;
        c.FlagsLogic(r, d.OpSize);
    }

    private static void Test(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d), b = c.ReadOp1(ref d);
        if (c.Faulted) return;
        c.FlagsLogic(a & b, d.OpSize);
    }

    private static void Not(Cpu c, ref DecodedInsn d)
    {
        uint a = c.ReadOp0(ref d);
        if (c.Faulted) return;
        c.WriteOp0(ref d, ~a);
    }
}
