# Adds up src/numbers.txt; runs under bash and under a POSIX sh.
total=0
while read -r n; do
    total=$((total + n))
done < src/numbers.txt
echo "total=$total"
test "$total" -eq 55
