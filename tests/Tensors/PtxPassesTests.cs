namespace BitDeltaNative.Tests.Tensors;

/// <summary>The PTX pass that turns ILGPU's inline-PTX operand depots into registers (PtxPasses.cs), on PTX written the
/// way ILGPU writes it: each depot that is only stored to and loaded from whole becomes a register and every access a
/// mov; a depot used any other way, or of another size, stays as it is.</summary>
public class PtxPassesTests
{
    const string Before = """
        .visible .entry K(
        	.param .b64 _p
        )
        {
        	.local .align 4 .b8 __local_depot0[4];
        	.local .align 4 .b8 __local_depot1[4];
        	.local .align 8 .b8 __local_depot2[8];
        	.local .align 4 .b8 __local_depot3[16];
        	.local .align 4 .b8 __local_depot4[4];
        	.reg .b32 %r<9>;
        	.reg .f32 %f<9>;
        	.reg .b64 %rd<9>;
        	mov.b64	%rd1, __local_depot0;
        	mov.b64	%rd2, __local_depot1;
        	mov.b64	%rd3, __local_depot2;
        	mov.b64	%rd4, __local_depot3;
        	mov.b64	%rd5, __local_depot4;
        	st.local.b32	[%rd1], %r1;
        	st.local.f32	[%rd2], 0f3F800000;
        	ld.local.b32	%r2, [%rd1];
        	ld.local.f32	%f1, [%rd2];
        	mma.fake {%f2}, {%r2}, {%f1};
        	st.local.f32	[%rd2], %f2;
        	ld.local.f32	%f3, [%rd2];
        	st.local.b64	[%rd3], %rd7;
        	ld.local.b64	%rd8, [%rd3];
        	st.local.b32	[%rd4], %r3;
        	add.s64	%rd6, %rd5, 4;
        	st.local.b32	[%rd5], %r4;
        	ret;
        }
        """;

    [Fact]
    public void Whole_depots_become_registers_and_others_stay()
    {
        var (ptx, n) = PtxPasses.Promote(Before);
        Assert.Equal(3, n);
        string Line(string s) => "\t" + s;
        var lines = ptx.Split('\n');
        // depots 0, 1 (4 bytes) and 2 (8 bytes): declared as registers where the depot was, their address movs gone
        Assert.Contains(Line(".reg .b32 %ldp0;"), lines);
        Assert.Contains(Line(".reg .b32 %ldp1;"), lines);
        Assert.Contains(Line(".reg .b64 %ldp2;"), lines);
        Assert.DoesNotContain(lines, l => l.Contains("__local_depot0") || l.Contains("__local_depot1") || l.Contains("__local_depot2"));
        Assert.Contains(Line("mov.b32\t%ldp0, %r1;"), lines);
        Assert.Contains(Line("mov.f32\t%ldp1, 0f3F800000;"), lines);
        Assert.Contains(Line("mov.b32\t%r2, %ldp0;"), lines);
        Assert.Contains(Line("mov.f32\t%f1, %ldp1;"), lines);
        Assert.Contains(Line("mov.f32\t%ldp1, %f2;"), lines);
        Assert.Contains(Line("mov.f32\t%f3, %ldp1;"), lines);
        Assert.Contains(Line("mov.b64\t%ldp2, %rd7;"), lines);
        Assert.Contains(Line("mov.b64\t%rd8, %ldp2;"), lines);
        // depot 3 (16 bytes) and depot 4 (an offset taken into it) as they were
        foreach (var keep in new[] { ".local .align 4 .b8 __local_depot3[16];", "mov.b64\t%rd4, __local_depot3;", "st.local.b32\t[%rd4], %r3;",
                                     ".local .align 4 .b8 __local_depot4[4];", "mov.b64\t%rd5, __local_depot4;", "add.s64\t%rd6, %rd5, 4;", "st.local.b32\t[%rd5], %r4;" })
            Assert.Contains(Line(keep), lines);
        // everything else untouched, in its order
        Assert.Contains(Line("mma.fake {%f2}, {%r2}, {%f1};"), lines);
        Assert.Equal(Before.Split('\n').Length - 3, lines.Length);
    }

    [Fact]
    public void A_depot_read_at_another_width_or_with_nothing_to_promote_is_left_alone()
    {
        string mixed = Before.Replace("ld.local.b32\t%r2, [%rd1];", "ld.local.b16\t%r2, [%rd1];");
        var (ptx, n) = PtxPasses.Promote(mixed);
        Assert.Equal(2, n);
        Assert.Contains("mov.b64\t%rd1, __local_depot0;", ptx);
        Assert.Contains("st.local.b32\t[%rd1], %r1;", ptx);
        const string plain = ".visible .entry K()\n{\n\tret;\n}\n";
        Assert.Equal((plain, 0), PtxPasses.Promote(plain));
    }

    [Fact]
    public void Launch_bounds_go_between_the_parameters_and_the_body()
    {
        string ptx = PtxPasses.Bound(Before, 256, 3);
        Assert.Contains("\t.param .b64 _p\n)\n.maxntid 256, 1, 1\n.minnctapersm 3\n{\n", ptx);
        Assert.Equal(Before.Length + ".maxntid 256, 1, 1\n.minnctapersm 3\n".Length, ptx.Length);
        Assert.Throws<NotSupportedException>(() => PtxPasses.Bound(ptx, 256, 3));          // bounds there already
        Assert.Throws<NotSupportedException>(() => PtxPasses.Bound(Before + Before, 256, 3)); // two entries
        Assert.Throws<ArgumentException>(() => PtxPasses.Bound(Before, 0, 3));
    }

    [Fact]
    public void The_arch_specific_target_is_sm_90a_and_only_from_sm_90()
    {
        const string head = ".version 8.8\n.target sm_90\n.address_size 64\n";
        Assert.Equal(".version 8.8\n.target sm_90a\n.address_size 64\n", PtxPasses.ArchSpecific(head));
        Assert.Throws<NotSupportedException>(() => PtxPasses.ArchSpecific(head.Replace("sm_90", "sm_80")));
        Assert.Throws<NotSupportedException>(() => PtxPasses.ArchSpecific(".version 8.8\n"));
    }
}
