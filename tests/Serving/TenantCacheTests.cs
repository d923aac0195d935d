using BitDeltaNative.Serving;

namespace BitDeltaNative.Tests.Serving;

/// <summary>`serve`'s memory plan: how many tenants stay resident under --gpu-memory and --resident.</summary>
public class TenantCacheTests
{
    const long G = 1_000_000_000;

    [Theory]
    [InlineData(null, 16, null, 0.0, 16)]         // no budget: every tenant resident
    [InlineData(null, 16, 4, 0.0, 4)]             // --resident caps it
    [InlineData(30.0, 16, null, 0.0, 16)]         // 30 GB: 13.5 base + 2 KV + 16 × 0.8 = 28.3 fits all
    [InlineData(20.0, 16, null, 0.0, 5)]          // 4.5 GB left: 5 slots of 0.8
    [InlineData(20.0, 16, null, 0.5, 3)]          // each also keeps 0.5 GB whole (embedding, head): 3 × 1.3
    [InlineData(20.0, 16, 2, 0.0, 2)]
    [InlineData(20.0, 3, null, 0.0, 3)]           // never more than the tenants there are
    [InlineData(16.0, 0, null, 0.0, 1)]           // no tenants: one slot (the pool is never empty)
    public void ResidentTenantsFitTheBudget(double? budgetGb, int tenants, int? resident, double wholeGb, int want)
    {
        long? budget = budgetGb is { } gb ? (long)(gb * G) : null;
        var whole = Enumerable.Range(0, tenants).Select(i => (long)(wholeGb * G) - i).ToList();
        var (n, pool) = TenantCache.Plan(budget, 13_500_000_000, 2 * G, 800_000_000, whole, resident);
        Assert.Equal(want, n);
        Assert.Equal(budget is { } b ? b - 15_500_000_000 : long.MaxValue, pool);
        if (budget != null) Assert.True(tenants == 0 || n * 800_000_000L + whole.Take(n).Sum() <= pool);
    }

    [Theory]
    [InlineData(15.0, 4, null, "does not hold the base")]
    [InlineData(15.9, 4, null, "and the largest delta")]
    [InlineData(16.5, 4, null, "and the largest delta")]   // 1.0 GB left: the slot fits, its 0.5 GB of whole tensors not
    [InlineData(30.0, 4, 0, "--resident")]
    public void ImpossiblePlansSayWhatToLower(double budgetGb, int tenants, int? resident, string says)
    {
        var whole = Enumerable.Repeat(500_000_000L, tenants).ToList();
        var e = Assert.Throws<BitDeltaException>(() => TenantCache.Plan((long)(budgetGb * G), 13_500_000_000, 2 * G, 800_000_000, whole, resident));
        Assert.Contains(says, e.Message);
    }
}
